"""A study spec: models x recipe sweeps x seeds x probes, validated before any work starts.

YAML form (every key but `models` and `recipes` is optional):

    name: my-study
    models: [smollm2-135m]
    probes: [lama-trex, piqa]
    limit: 50                  # items per relation (LAMA) or per task; omit for full size
    seeds: [0]
    output: runs/my-study.sqlite
    similarity: 16             # per-layer similarity to the uncompressed model on 16 texts
    precision: 2               # adaptive: stop a probe once its drop is known to +-2 points
    recipes:
      - preset: global-pruning                      # every sweep of a built-in preset
      - name: ff-structured                         # or a sweep of your own
        recipe: prune:ln_structured:feed_forward:{level}
        levels: [0.1, 0.3, 0.5]
      - quant:dynamic_int8:attention                # or one fixed recipe
      - name: gptq4                                 # a recipe followed by recovery
        recipe: quant:gptq:overall:bits=4
        recover: [lora, "idp:prompts=3"]
    calibration:               # text of calibrated methods: gptq, sparsegpt, wanda (optional)
      source: data:boolq,sciq
      nsamples: 64
      calibration_seqlen: 512
    recovery:                  # training settings of every recover step (all optional)
      tokens: 32768
      train_seqlen: 256        # (`seqlen`, its older name, is still read)
      batch_size: 4
      calibration: data:boolq,sciq
      ablation: true           # IDP trials also score each prompt alone and their concatenation

`{level}` in a recipe is replaced by each level of its sweep; a sweep may set its own `seeds`.
A sweep may vary another option of its methods instead (`vary: bits`, `levels: [2, 3, 4, 8]`,
recipe `quant:gptq:overall:bits={bits}`): each value is checked by the method itself (its type
and range), a level (`vary: level`, the default) is a fraction in (0, 1).
A sweep with `recover` runs each of its recipes as it is and once per recovery method (trained
after compression, attached while the probes run). The levels may fill a recovery method
instead: `recover: "prompt:tokens={tokens}"`, `vary: tokens`, `levels: [26, 50, 100]` gives one
recovered trial per prompt length (`lora:r={r}` sweeps LoRA ranks); a placeholder in both the
recipe and a method fills both with the same value.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from knowcomp.errors import KnowcompError

SPEC_KEYS = {
    "name", "models", "probes", "limit", "seeds", "output", "recipes", "lama_mode", "dtype",
    "add_bos", "device", "device_map", "data_dir", "similarity", "recovery", "lama_protocol",
    "calibration",
    "precision",
    "batch_tokens",
}  # fmt: skip
SWEEP_KEYS = {"name", "recipe", "levels", "seeds", "preset", "recover", "vary"}
LEVEL = "level"  # what a sweep varies unless it says otherwise
RECOVERY_KEYS = {"tokens", "train_seqlen", "seqlen", "batch_size", "calibration", "save_adapters",
                 "ablation"}  # fmt: skip
CALIBRATION_KEYS = {"source", "nsamples", "calibration_seqlen"}
EXAMPLES = {  # a value of each string key, for error messages
    "name": "name: my-study", "output": "output: runs/my-study.sqlite",
    "data_dir": "data_dir: data", "lama_mode": "lama_mode: next-token",
    "lama_protocol": "lama_protocol: cost-of-compression",
    "dtype": "dtype: float32", "device": "device: cpu", "device_map": "device_map: auto",
}  # fmt: skip
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
    """One recipe, optionally swept over levels: `prune:l1_unstructured:overall:{level}`, or
    over the values of another option it names (`vary="bits"`: `quant:gptq:overall:bits={bits}`).
    """

    name: str
    recipe: str
    levels: tuple[float, ...] = ()
    seeds: tuple[int, ...] | None = None  # None: the study's seeds
    recover: tuple[str, ...] = ()  # recovery methods (`short_method` text), each a trial
    vary: str = LEVEL  # the option `levels` fills in: `{level}`, or e.g. `{bits}`

    def recipes(self) -> list[tuple[float | None, str]]:
        """(level, compact recipe) for every level, or [(None, recipe)] for a fixed recipe
        (also when the levels fill the recovery methods only)."""
        if not self.levels or not self.varies_recipe:
            return [(None, self.recipe)]
        return [(level, fill(self.recipe, self.vary, level)) for level in self.levels]

    @property
    def varies_recipe(self) -> bool:
        return "{" + self.vary + "}" in self.recipe

    def methods(self, level: float | None) -> list[tuple[float | None, str]]:
        """(level, method) for each recovery method at the recipe's `level`: a method with the
        `{vary}` placeholder gives one method per level (`prompt:tokens={tokens}`,
        `vary: tokens`, `levels: [26, 50, 100]`), written as `short_method` writes it, so a
        method swept to a value has the key it has when written out."""
        out: list[tuple[float | None, str]] = []
        for method in self.recover:
            if "{" + self.vary + "}" not in method:
                out.append((level, method))
            elif level is not None:  # recipe and methods swept together: the same value
                out.append((level, short_method(fill(method, self.vary, level))))
            else:
                out += [(v, short_method(fill(method, self.vary, v))) for v in self.levels]
        return out


def fill(recipe: str, vary: str, value: float) -> str:
    """The recipe with its `{vary}` placeholder replaced by `value` (`4`, not `4.0`)."""
    return recipe.replace("{" + vary + "}", f"{value:g}")


@dataclass(frozen=True)
class RecoverySettings:
    """How every recover step of a study trains (`knowcomp.recovery.TrainSettings`, without the
    seed: each trial trains with its own), and whether adapters are kept beside the results."""

    tokens: int = 32_768
    seqlen: int = 256
    batch_size: int = 4
    calibration: str = "data"  # `data`, `data:NAME[,NAME]` or a UTF-8 text file
    save_adapters: bool = True  # under `<results stem>-adapters/<trial key>/`
    # IDP trials also score each prompt alone and their concatenation (the ICML 2024 study's
    # Table 3), stored with the trial; adds results, changes no score, so not in any key
    ablation: bool = False

    def __post_init__(self) -> None:
        from knowcomp.recovery.settings import RecoveryError

        try:
            self.train_settings(0)
        except RecoveryError as err:
            raise SpecError(f"recovery: {err}") from None

    def train_settings(self, seed: int, data_dir: Path | str | None = None):
        """The `TrainSettings` of one trial."""
        from knowcomp.recovery.training import TrainSettings

        return TrainSettings(self.tokens, self.seqlen, self.batch_size, seed, self.calibration,
                             str(data_dir) if data_dir else None)  # fmt: skip

    def key(self) -> dict[str, Any]:
        """What changes the training (and so the scores): part of every recovered trial's key."""
        train = self.train_settings(0)
        return {"tokens": train.blocks * train.seqlen, "seqlen": self.seqlen,
                "batch_size": self.batch_size, "calibration": self.calibration}  # fmt: skip


@dataclass(frozen=True)
class CalibrationSettings:
    """The text calibrated compression methods read (`compress.calibration.CalibrationSpec`,
    without the seed: each trial calibrates with its own), as `knowcomp compress
    --calibration/--nsamples/--calibration-seqlen` set it."""

    source: str = "data"
    nsamples: int = 64
    seqlen: int = 512

    def key(self) -> dict[str, Any]:
        return {"source": self.source, "nsamples": self.nsamples, "seqlen": self.seqlen}


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
    lama_protocol: str = "templates"  # or "cost-of-compression" (`probes.lama.protocols`)
    dtype: str = "float32"
    add_bos: str = "auto"  # BOS first in decoder inputs: auto | true | false (probes.inputs)
    device: str = "auto"  # a CUDA GPU when there is one, else the CPU
    device_map: str | None = None
    data_dir: Path | None = None
    similarity: int = 0  # texts for layer-wise similarity of each compressed trial; 0: off
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    calibration: CalibrationSettings | None = None  # None: the default calibration text
    # adaptive evaluation (`study.adaptive`): the drop's half-width to stop at, in points
    precision: float | None = None
    batch_tokens: int | None = None  # padded tokens per probe batch; None: the device's default

    @property
    def recovers(self) -> bool:
        """Whether any sweep has a recover step."""
        return any(sweep.recover for sweep in self.sweeps)

    def adapters_folder(self) -> Path | None:
        """Where trained adapters are kept (`<results stem>-adapters/`), or None: not kept."""
        if not (self.recovers and self.recovery.save_adapters):
            return None
        return self.output.with_name(self.output.stem + "-adapters")

    def with_overrides(self, **values: Any) -> StudySpec:
        """A copy with the given fields replaced (None values are ignored; `auto` device and
        dtype resolved)."""
        return _resolved(replace(self, **{k: v for k, v in values.items() if v is not None}))

    def spec_hash(self) -> str:
        """Identifies the spec's content (not its output path) in every stored trial."""
        from knowcomp.models.placement import resolve_auto

        data = asdict(self)
        data.pop("output")
        data["device"], data["dtype"] = resolve_auto(self.device, self.dtype)  # as it runs
        data.pop("precision")  # how long to measure, not what: a tighter rerun extends a study
        data.pop("batch_tokens")  # where batches are cut changes no score
        data["data_dir"] = str(data["data_dir"]) if data["data_dir"] else None
        if not data["similarity"]:
            data.pop("similarity")  # specs without it keep the hash they had before it existed
        if data["add_bos"] == "auto":
            data.pop("add_bos")  # likewise for the default input rule
        if data["lama_protocol"] == "templates":
            data.pop("lama_protocol")  # likewise for the default LAMA protocol
        if data["calibration"] is None:
            data.pop("calibration")  # likewise for the default calibration text
        for sweep in data["sweeps"]:
            if not sweep["recover"]:
                sweep.pop("recover")  # likewise for sweeps without recovery
            if sweep["vary"] == LEVEL:
                sweep.pop("vary")  # likewise for sweeps over levels
        if self.recovers:
            data["recovery"].pop("save_adapters")  # where adapters go is not content
            if not data["recovery"]["ablation"]:
                data["recovery"].pop("ablation")  # specs without it keep their hash
        else:
            data.pop("recovery")
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_spec(path: Path) -> StudySpec:
    """Read and validate a YAML study spec."""
    from knowcomp.data.readers import load_yaml, read_text

    data = load_yaml(read_text(path, "study spec", SpecError), f"study spec {path}", SpecError)
    if not isinstance(data, dict):
        raise SpecError(
            f"study spec {path} is not a mapping; write keys such as models: [...] and "
            "recipes: [...] (see `knowcomp run --help`)"
        )
    return spec_from_dict(data, default_name=path.stem)


def spec_from_dict(data: dict[str, Any], *, default_name: str = "study") -> StudySpec:
    unknown = sorted(map(str, set(data) - SPEC_KEYS))
    if unknown:
        raise SpecError(
            f"unknown study key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}"
        )
    if not data.get("models"):
        raise SpecError("study spec needs 'models' (a non-empty list), e.g. models: [smollm2-135m]")
    if data.get("recipes") is None:
        raise SpecError("study spec needs 'recipes' (a list; [] scores the models uncompressed)")
    for key in ("name", "output", "data_dir"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise SpecError(f"'{key}' must be a string, got {data[key]!r}; write e.g. "
                            f"{EXAMPLES[key]}")  # fmt: skip
    name = str(data.get("name") or default_name)
    values: dict[str, Any] = {
        "name": name,
        "models": _names(data["models"], "models", "models: [smollm2-135m]"),
        "sweeps": tuple(s for raw in _as_list(data["recipes"], "recipes") for s in _sweeps(raw)),
        "output": Path(data.get("output") or f"runs/{name}.sqlite"),
    }
    if "probes" in data:
        values["probes"] = _names(data["probes"], "probes", "probes: [lama-trex, piqa]")
    if "seeds" in data:
        values["seeds"] = _seeds(data["seeds"], "seeds")
    if data.get("limit") is not None:
        values["limit"] = _limit(data["limit"])
    for key in ("lama_mode", "lama_protocol", "dtype", "device", "device_map"):
        if data.get(key) is not None:
            if not isinstance(data[key], str):
                raise SpecError(f"'{key}' must be a string, got {data[key]!r}; write e.g. "
                                f"{EXAMPLES[key]}")  # fmt: skip
            values[key] = data[key]
    if data.get("add_bos") is not None:
        values["add_bos"] = _add_bos(data["add_bos"])
    if data.get("data_dir"):
        values["data_dir"] = Path(data["data_dir"])
    if data.get("similarity") is not None:
        values["similarity"] = _similarity(data["similarity"])
    if data.get("recovery") is not None:
        values["recovery"] = _recovery(data["recovery"])
    if data.get("calibration") is not None:
        values["calibration"] = _calibration(data["calibration"])
    if data.get("precision") is not None:
        values["precision"] = _precision(data["precision"])
    if data.get("batch_tokens") is not None:
        values["batch_tokens"] = _batch_tokens(data["batch_tokens"])
    return _resolved(StudySpec(**values))


def _resolved(spec: StudySpec) -> StudySpec:
    """`device: auto` and `dtype: auto` resolved as every command resolves them, so trial keys
    name the dtype that ran."""
    from knowcomp.models.placement import resolve_auto

    device, dtype = resolve_auto(spec.device, spec.dtype)
    return (
        spec
        if (device, dtype) == (spec.device, spec.dtype)
        else replace(spec, device=device, dtype=dtype)
    )


def _precision(raw: Any) -> float:
    from knowcomp.pipeline.adaptive import check_precision

    try:
        return check_precision(raw)
    except KnowcompError as err:
        raise SpecError(str(err)) from None


def _add_bos(raw: Any) -> str:
    from knowcomp.probes.inputs import check_bos_setting

    try:
        return check_bos_setting(raw)
    except KnowcompError as err:
        raise SpecError(str(err)) from None


def _sweeps(raw: Any) -> list[Sweep]:
    from knowcomp.study.presets import preset_sweeps

    if isinstance(raw, str):
        return [Sweep(name=raw, recipe=raw)]
    if not isinstance(raw, dict):
        raise SpecError(f"a recipes entry must be a recipe string or a mapping, got {raw!r}")
    unknown = sorted(map(str, set(raw) - SWEEP_KEYS))
    if unknown:
        raise SpecError(
            f"unknown recipes key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SWEEP_KEYS))}"
        )
    if "preset" in raw:
        sweeps = preset_sweeps(str(raw["preset"]))
        if raw.get("recover") is None:
            return sweeps
        return [  # `{preset: NAME, recover: lora}`: every sweep of the preset, recovered too
            replace(s, recover=tuple(dict.fromkeys(s.recover + _recover(raw["recover"], s.name))))
            for s in sweeps
        ]
    if "recipe" not in raw:
        raise SpecError(f"recipes entry {raw!r} needs 'recipe' (or 'preset')")
    recipe = str(raw["recipe"])
    name = str(raw.get("name") or recipe)
    vary = _vary(raw.get("vary", LEVEL), name)
    placeholder = "{" + vary + "}"
    values = _strict_list(raw.get("levels", []), "levels", "levels: [0.1, 0.5]")
    levels = tuple(_level(v) if vary == LEVEL else _value(v, vary) for v in values)
    _no_repeats(levels, f"recipe sweep '{name}': levels")
    recover = (_recover(raw["recover"], name, vary, levels)
               if raw.get("recover") is not None else ())  # fmt: skip
    swept_methods = any(placeholder in method for method in recover)
    if levels and placeholder not in recipe and not swept_methods:
        raise SpecError(f"recipe '{recipe}' has levels but no {placeholder} placeholder to fill "
                        f"(in the recipe, or in a recover method such as "
                        f"'prompt:tokens={placeholder}')")  # fmt: skip
    if not levels and (placeholder in recipe or swept_methods):
        where = f"recipe '{recipe}'" if placeholder in recipe else f"recipe sweep '{name}'"
        raise SpecError(f"{where} has a {placeholder} placeholder but no levels")
    if vary != LEVEL and placeholder in recipe:
        _check_values(recipe, vary, levels, name)
    seeds = _seeds(raw["seeds"], "seeds") if "seeds" in raw else None
    return [Sweep(name=name, recipe=recipe, levels=levels, seeds=seeds, recover=recover,
                  vary=vary)]  # fmt: skip


def _vary(value: Any, sweep: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", value):
        raise SpecError(
            f"recipe sweep '{sweep}': vary names the option its levels fill in, e.g. vary: bits "
            f"with recipe quant:gptq:overall:bits={{bits}}; got {value!r}"
        )
    return value


def _value(value: Any, vary: str) -> float:
    from knowcomp.compress.registry import parse_number

    try:
        return parse_number(value)
    except ValueError:
        raise SpecError(
            f"{vary} {value!r} is not a number in ASCII digits that a float can hold; write e.g. "
            f"levels: [2, 3, 4, 8]"
        ) from None


def _check_values(recipe: str, vary: str, levels: tuple[float, ...], sweep: str) -> None:
    """Each value of an option other than the level, checked by the method it goes to (its
    type and range: `gptq` takes integer bits from 2 to 8), before any work."""
    from knowcomp.compress import parse_recipe

    for level in levels:
        filled = fill(recipe, vary, level)
        left = re.search(r"\{(\w+)\}", filled)
        if left:
            raise SpecError(f"recipe sweep '{sweep}' varies {vary}, but its recipe also has a "
                            f"{left.group(0)} placeholder; fill it in or vary it")  # fmt: skip
        try:
            parse_recipe(filled)
        except KnowcompError as err:
            raise SpecError(f"recipe sweep '{sweep}': {vary}={level:g}: {err}") from None


def _recover(value: Any, sweep: str, vary: str = LEVEL,
             levels: tuple[float, ...] = ()) -> tuple[str, ...]:  # fmt: skip
    """Each recovery method of a sweep, checked and written in one way (`short_method`); a
    method with the sweep's `{vary}` placeholder is kept as written, each of its values checked
    by the method (`lora:r={r}` takes integer ranks of at least 1)."""
    from knowcomp.recovery.settings import RecoveryError

    methods = []
    placeholder = "{" + vary + "}"
    for item in _as_list(value, "recover"):
        if not isinstance(item, str) or not item.strip():
            raise SpecError(
                f"recipe sweep '{sweep}': recover takes a method or a list of methods, e.g. "
                f"recover: [lora, 'idp:prompts=3'], got {item!r}"
            )
        if placeholder in item:
            for level in levels:
                try:
                    short_method(fill(item, vary, level))
                except RecoveryError as err:
                    raise SpecError(f"recipe sweep '{sweep}': recover: {vary}={level:g}: "
                                    f"{err}") from None  # fmt: skip
            if item.strip() not in methods:
                methods.append(item.strip())
            continue
        try:
            text = short_method(item)
        except RecoveryError as err:
            raise SpecError(f"recipe sweep '{sweep}': recover: {err}") from None
        if text not in methods:
            methods.append(text)
    return tuple(methods)


def short_method(text: str) -> str:
    """A recovery method with only the options that differ from their defaults, in the
    settings' field order: `lora`, `idp:prompts=4`. One method has one text however it was
    written (`lora:r=8` is `lora`), and a trial's key stays the same when a method gains an
    option with a default."""
    from dataclasses import fields

    from knowcomp.recovery.settings import parse_method

    settings = parse_method(text)
    default = type(settings)()
    changed = [f"{f.name}={getattr(settings, f.name)}" for f in fields(settings)
               if getattr(settings, f.name) != getattr(default, f.name)]  # fmt: skip
    return ":".join([settings.method, *changed])


def _calibration(value: Any) -> CalibrationSettings:
    example = "calibration: {source: data:boolq,sciq, nsamples: 64, calibration_seqlen: 512}"
    if not isinstance(value, dict):
        raise SpecError(f"'calibration' must be a mapping, e.g. {example}, got {value!r}")
    unknown = sorted(map(str, set(value) - CALIBRATION_KEYS))
    if unknown:
        raise SpecError(f"unknown calibration key(s) {', '.join(unknown)}; allowed: "
                        + ", ".join(sorted(CALIBRATION_KEYS)))  # fmt: skip
    values: dict[str, Any] = {}
    for key, field_name, least in (
        ("nsamples", "nsamples", 1),
        ("calibration_seqlen", "seqlen", 2),
    ):
        if value.get(key) is not None:
            number = value[key]
            if not isinstance(number, int) or isinstance(number, bool) or number < least:
                raise SpecError(
                    f"calibration: '{key}' must be an integer of at least {least}, got {number!r}"
                )
            values[field_name] = number
    if value.get("source") is not None:
        values["source"] = _text_source("calibration", "source", value["source"])
    return CalibrationSettings(**values)


def _text_source(block: str, key: str, raw: Any) -> str:
    """A text source key of a spec block: `data`, `data:NAME[,NAME]` or a text file path."""
    if not isinstance(raw, str) or not raw.strip():
        raise SpecError(
            f"{block}: '{key}' is 'data', 'data:NAME[,NAME]' or a text file path, got {raw!r}"
        )
    return raw.strip()


def _recovery(value: Any) -> RecoverySettings:
    if not isinstance(value, dict):
        raise SpecError(
            "'recovery' must be a mapping, e.g. recovery: {tokens: 32768, train_seqlen: 256}, "
            f"got {value!r}"
        )
    if "train_seqlen" in value:  # the block length's name; `seqlen` is its older name
        if "seqlen" in value:
            raise SpecError("recovery: give 'train_seqlen' or its older name 'seqlen', not both")
        value = {**value, "seqlen": value["train_seqlen"]}
        del value["train_seqlen"]
    unknown = sorted(map(str, set(value) - RECOVERY_KEYS))
    if unknown:
        raise SpecError(
            f"unknown recovery key(s) {', '.join(unknown)}; allowed: "
            + ", ".join(sorted(RECOVERY_KEYS))
        )
    values: dict[str, Any] = {}
    for key in ("tokens", "seqlen", "batch_size"):
        if value.get(key) is not None:
            number = value[key]
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                name = "train_seqlen" if key == "seqlen" else key
                raise SpecError(f"recovery: '{name}' must be a positive integer, got {number!r}")
            values[key] = number
    if value.get("calibration") is not None:
        values["calibration"] = _text_source("recovery", "calibration", value["calibration"])
    if value.get("save_adapters") is not None:
        if not isinstance(value["save_adapters"], bool):
            raise SpecError(
                f"recovery: 'save_adapters' is true or false, got {value['save_adapters']!r}"
            )
        values["save_adapters"] = value["save_adapters"]
    if value.get("ablation") is not None:
        if not isinstance(value["ablation"], bool):
            raise SpecError(f"recovery: 'ablation' is true or false, got {value['ablation']!r}")
        values["ablation"] = value["ablation"]
    return RecoverySettings(**values)


def _as_list(value: Any, key: str) -> list[Any]:
    if isinstance(value, str | int | float | dict):
        return [value]
    if not isinstance(value, list):
        raise SpecError(f"'{key}' must be a list, got {value!r}")
    return value


def _strict_list(value: Any, key: str, example: str) -> list[Any]:
    """A YAML list, not a scalar: `seeds: 0` or `models: name` is a mistake often enough (a
    list was meant, or a typo) that guessing would hide it."""
    if not isinstance(value, list):
        raise SpecError(f"'{key}' must be a list, e.g. {example}; got {value!r}")
    return value


def _names(value: Any, key: str, example: str) -> tuple[str, ...]:
    names = _strict_list(value, key, example)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SpecError(f"'{key}' must be a non-empty list of names, e.g. {example}; "
                        f"got {value!r}")  # fmt: skip
    names = [n.strip() for n in names]
    _no_repeats(names, key)
    return tuple(names)


def _no_repeats(values: Any, key: str) -> None:
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise SpecError(f"{key} repeat {', '.join(repeated)}; give each once")


def _level(value: Any) -> float:
    from knowcomp.compress.registry import parse_number

    try:
        level = parse_number(value)
    except ValueError:
        raise SpecError(
            f"level {value!r} is not a number in ASCII digits that a float can hold; write e.g. "
            "levels: [0.1, 0.5]"
        ) from None
    if not 0.0 < level < 1.0:
        raise SpecError(f"level {value} is out of range; levels are fractions in (0, 1), e.g. 0.5")
    return level


def _seeds(value: Any, key: str) -> tuple[int, ...]:
    seeds = _strict_list(value, key, f"{key}: [0, 1, 2]")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SpecError(f"'{key}' must be a non-empty list of integers, e.g. {key}: [0, 1, 2]; "
                        f"got {value!r}")  # fmt: skip
    _no_repeats(seeds, key)
    return tuple(seeds)


def _similarity(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SpecError(
            f"'similarity' must be the number of texts to compare layers on (0: off), got {value!r}"
        )
    return value


def _batch_tokens(value: Any) -> int:
    from knowcomp.probes.batching import check_batch_tokens

    try:
        return check_batch_tokens(value)
    except KnowcompError as err:
        raise SpecError(f"'batch_tokens': {err}") from None


def _limit(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(
            f"'limit' must be a positive integer (items per relation or task), got {value!r}"
        )
    return value
