"""A study spec: models x recipe sweeps x seeds x probes, validated before any work starts.

YAML form (every key but `models` and `recipes` is optional):

    name: my-study
    models: [smollm2-135m]
    probes: [lama-trex, piqa]
    limit: 50                  # items per relation (LAMA) or per task; omit for full size
    seeds: [0]
    output: runs/my-study.sqlite
    similarity: 16             # per-layer similarity to the uncompressed model on 16 texts
    recipes:
      - preset: global-pruning                      # every sweep of a built-in preset
      - name: ff-structured                         # or a sweep of your own
        recipe: prune:ln_structured:feed_forward:{level}
        levels: [0.1, 0.3, 0.5]
      - quant:dynamic_int8:attention                # or one fixed recipe

`{level}` in a recipe is replaced by each level of its sweep; a sweep may set its own `seeds`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from knowcomp.errors import KnowcompError

SPEC_KEYS = {
    "name", "models", "probes", "limit", "seeds", "output", "recipes", "lama_mode", "dtype",
    "device", "device_map", "data_dir", "similarity",
}  # fmt: skip
SWEEP_KEYS = {"name", "recipe", "levels", "seeds", "preset"}
DEFAULT_PROBES = (
    "lama-trex",
    "lama-google-re",
    "lama-squad",
    "lama-conceptnet-subset",
    "boolq",
    "piqa",
    "winogrande",
)  # fmt: skip  (the probes of The Cost of Compression)


class SpecError(KnowcompError):
    """A study spec that is malformed, names something unknown, or cannot be written."""


@dataclass(frozen=True)
class Sweep:
    """One recipe, optionally swept over levels: `prune:l1_unstructured:overall:{level}`."""

    name: str
    recipe: str
    levels: tuple[float, ...] = ()
    seeds: tuple[int, ...] | None = None  # None: the study's seeds

    def recipes(self) -> list[tuple[float | None, str]]:
        """(level, compact recipe) for every level, or [(None, recipe)] for a fixed recipe."""
        if not self.levels:
            return [(None, self.recipe)]
        return [(level, self.recipe.replace("{level}", f"{level:g}")) for level in self.levels]


@dataclass(frozen=True)
class StudySpec:
    name: str
    models: tuple[str, ...]
    sweeps: tuple[Sweep, ...]
    probes: tuple[str, ...] = DEFAULT_PROBES
    seeds: tuple[int, ...] = (0,)
    limit: int | None = None
    output: Path = field(default=Path("runs/study.sqlite"))
    lama_mode: str = "next-token"
    dtype: str = "float32"
    device: str = "cpu"
    device_map: str | None = None
    data_dir: Path | None = None
    similarity: int = 0  # texts for layer-wise similarity of each compressed trial; 0: off

    def with_overrides(self, **values: Any) -> StudySpec:
        """A copy with the given fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def spec_hash(self) -> str:
        """Identifies the spec's content (not its output path) in every stored trial."""
        data = asdict(self)
        data.pop("output")
        data["data_dir"] = str(data["data_dir"]) if data["data_dir"] else None
        if not data["similarity"]:
            data.pop("similarity")  # specs without it keep the hash they had before it existed
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_spec(path: Path) -> StudySpec:
    """Read and validate a YAML study spec."""
    if not path.is_file():
        raise SpecError(f"study spec '{path}' does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(
            f"study spec {path} is not valid YAML: {str(err).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise SpecError(f"study spec {path} must be a mapping with at least models and recipes")
    return spec_from_dict(data, default_name=path.stem)


def spec_from_dict(data: dict[str, Any], *, default_name: str = "study") -> StudySpec:
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise SpecError(
            f"unknown study key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}"
        )
    for key in ("models", "recipes"):
        if not data.get(key):
            raise SpecError(f"study spec needs '{key}' (a non-empty list)")
    name = str(data.get("name") or default_name)
    values: dict[str, Any] = {
        "name": name,
        "models": tuple(map(str, _as_list(data["models"], "models"))),
        "sweeps": tuple(s for raw in _as_list(data["recipes"], "recipes") for s in _sweeps(raw)),
        "output": Path(data.get("output") or f"runs/{name}.sqlite"),
    }
    if "probes" in data:
        values["probes"] = tuple(map(str, _as_list(data["probes"], "probes")))
    if "seeds" in data:
        values["seeds"] = _seeds(data["seeds"], "seeds")
    if data.get("limit") is not None:
        values["limit"] = _limit(data["limit"])
    for key in ("lama_mode", "dtype", "device", "device_map"):
        if data.get(key) is not None:
            values[key] = str(data[key])
    if data.get("data_dir"):
        values["data_dir"] = Path(data["data_dir"])
    if data.get("similarity") is not None:
        values["similarity"] = _similarity(data["similarity"])
    return StudySpec(**values)


def _sweeps(raw: Any) -> list[Sweep]:
    from knowcomp.study.presets import preset_sweeps

    if isinstance(raw, str):
        return [Sweep(name=raw, recipe=raw)]
    if not isinstance(raw, dict):
        raise SpecError(f"a recipes entry must be a recipe string or a mapping, got {raw!r}")
    unknown = sorted(set(raw) - SWEEP_KEYS)
    if unknown:
        raise SpecError(
            f"unknown recipes key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SWEEP_KEYS))}"
        )
    if "preset" in raw:
        return preset_sweeps(str(raw["preset"]))
    if "recipe" not in raw:
        raise SpecError(f"recipes entry {raw!r} needs 'recipe' (or 'preset')")
    recipe = str(raw["recipe"])
    levels = tuple(_level(v) for v in _as_list(raw.get("levels", []), "levels"))
    if levels and "{level}" not in recipe:
        raise SpecError(f"recipe '{recipe}' has levels but no {{level}} placeholder to fill")
    if not levels and "{level}" in recipe:
        raise SpecError(f"recipe '{recipe}' has a {{level}} placeholder but no levels")
    seeds = _seeds(raw["seeds"], "seeds") if "seeds" in raw else None
    return [Sweep(name=str(raw.get("name") or recipe), recipe=recipe, levels=levels, seeds=seeds)]


def _as_list(value: Any, key: str) -> list[Any]:
    if isinstance(value, str | int | float | dict):
        return [value]
    if not isinstance(value, list):
        raise SpecError(f"'{key}' must be a list, got {value!r}")
    return value


def _level(value: Any) -> float:
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"level {value!r} is not a number; write e.g. levels: [0.1, 0.5]") from None
    if not 0.0 < level < 1.0:
        raise SpecError(f"level {value} is out of range; levels are fractions in (0, 1), e.g. 0.5")
    return level


def _seeds(value: Any, key: str) -> tuple[int, ...]:
    seeds = _as_list(value, key)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SpecError(f"'{key}' must be a list of integers, got {value!r}")
    return tuple(seeds)


def _similarity(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SpecError(
            f"'similarity' must be the number of texts to compare layers on (0: off), got {value!r}"
        )
    return value


def _limit(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(
            f"'limit' must be a positive integer (items per relation or task), got {value!r}"
        )
    return value
