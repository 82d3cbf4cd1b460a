"""Expand a study spec into trials, and check everything that can be checked without a model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from knowcomp.errors import KnowcompError
from knowcomp.study.spec import LEVEL, SpecError, StudySpec, short_method

BASELINE = "baseline"


@dataclass(frozen=True)
class Trial:
    """One model compressed with one recipe (or none: the baseline) and one seed.

    `key` identifies the result: the same trial in another study, or in a rerun, is the same
    row. Everything that changes the scores is in the key; labels like the sweep name are not.
    """

    model: str
    sweep: str
    recipe: str | None  # compact recipe; None for the uncompressed baseline
    level: float | None
    seed: int
    limit: int | None
    lama_mode: str
    dtype: str
    recover: str | None = None  # the recovery method (`short_method` text), or None
    train: str | None = None  # its training settings (`RecoverySettings.key()` as JSON)
    add_bos: str = "auto"  # BOS first in decoder inputs (`probes.inputs`)
    lama_protocol: str = "templates"  # see `probes.lama.protocols`
    calibration: str | None = None  # calibration text settings (JSON) when not the default
    vary: str = LEVEL  # the option `level` is the value of (its sweep's `vary`); not in the key

    @property
    def key(self) -> str:
        values: dict[str, Any] = {
            "model": self.model, "recipe": self.recipe, "seed": self.seed, "limit": self.limit,
            "lama_mode": self.lama_mode, "dtype": self.dtype,
        }  # fmt: skip
        if self.recover is not None:  # trials without recovery keep the keys they always had
            values["recover"] = self.recover
            values["train"] = json.loads(self.train or "{}")
        if self.add_bos != "auto":  # likewise trials with the default input rule
            values["add_bos"] = self.add_bos
        if self.lama_protocol != "templates":  # likewise for the default LAMA protocol
            values["lama_protocol"] = self.lama_protocol
        if self.calibration is not None:  # likewise for the default calibration text
            values["calibration"] = json.loads(self.calibration)
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:20]

    @property
    def is_baseline(self) -> bool:
        return self.recipe is None

    @property
    def method(self) -> str | None:
        """The recovery method: its name and the options that differ from the defaults
        (`lora`, `idp:prompts=4`), or None without recovery."""
        return None if self.recover is None else short_method(self.recover)

    @property
    def label(self) -> str:
        """The sweep, its level, and the recovery method: for progress lines."""
        value = "" if self.vary == LEVEL else f"{self.vary}="
        label = self.sweep if self.level is None else f"{self.sweep} {value}{self.level:g}"
        return label if self.recover is None else f"{label} + {self.method}"

    def to_dict(self) -> dict:
        return asdict(self)


def expand(spec: StudySpec) -> list[Trial]:
    """Every trial of the spec, baselines first, grouped by model (each model loads once).

    A recipe with recover steps gives its compressed trial (the reference recovery is measured
    against) and one trial per recovery method, run one after another so the model is
    compressed once for all of them."""
    trials: list[Trial] = []
    common = {"limit": spec.limit, "lama_mode": spec.lama_mode, "dtype": spec.dtype,
              "add_bos": spec.add_bos, "lama_protocol": spec.lama_protocol}  # fmt: skip
    train = json.dumps(spec.recovery.key(), sort_keys=True) if spec.recovers else None
    calibration = json.dumps(spec.calibration.key(), sort_keys=True) if spec.calibration else None
    for model in spec.models:
        seeds_used: list[int] = []
        compressed: list[Trial] = []
        for sweep in spec.sweeps:
            for seed in sweep.seeds or spec.seeds:
                if seed not in seeds_used:
                    seeds_used.append(seed)
                for level, recipe in sweep.recipes():
                    plain = Trial(model, sweep.name, recipe, level, seed, **common,
                                  vary=sweep.vary, calibration=calibration)  # fmt: skip
                    compressed.append(plain)
                    compressed += [replace(plain, level=value, recover=m, train=train)
                                   for value, m in sweep.methods(level)]  # fmt: skip
        if not spec.sweeps:  # a study of baselines only
            seeds_used = list(spec.seeds)
        trials += [Trial(model, BASELINE, None, None, s, **common) for s in seeds_used]
        trials += _by_compression(_unique(compressed))
    return trials


def _by_compression(trials: list[Trial]) -> list[Trial]:
    """Trials of the same recipe and seed side by side, in order of first appearance."""
    groups: dict[tuple[str | None, int], list[Trial]] = {}
    for trial in trials:
        groups.setdefault((trial.recipe, trial.seed), []).append(trial)
    return [trial for group in groups.values() for trial in group]


def _unique(trials: list[Trial]) -> list[Trial]:
    seen: set[str] = set()
    out = []
    for trial in trials:
        if trial.key not in seen:
            seen.add(trial.key)
            out.append(trial)
    return out


def validate(spec: StudySpec) -> list[Trial]:
    """Check models, probes, recipes and options before any work; return the trials."""
    from knowcomp.compress import parse_recipe
    from knowcomp.models.loading import check_model
    from knowcomp.models.placement import check_placement, resolve_auto
    from knowcomp.probes.base import RunOptions
    from knowcomp.probes.lama.protocols import check_protocol
    from knowcomp.probes.registry import get_probe

    if spec.lama_mode not in ("next-token", "candidates", "generate"):
        raise SpecError(
            f"unknown lama_mode '{spec.lama_mode}'; choose next-token, candidates or generate"
        )
    try:
        check_protocol(spec.lama_protocol, spec.lama_mode)
    except KnowcompError as err:
        raise SpecError(f"lama_protocol: {err}") from None
    try:
        placement = check_placement(*resolve_auto(spec.device, spec.dtype), spec.device_map)
    except KnowcompError as err:
        raise SpecError(f"study spec: {err}") from None
    if not spec.probes:
        raise SpecError("the study has no probes; set probes: [lama-trex, piqa] or --probes")
    probes = [get_probe(probe) for probe in spec.probes]
    options = RunOptions(lama_mode=spec.lama_mode)
    families = {}
    for model in spec.models:
        family = families[model] = check_model(model)
        for probe in probes if family is not None else ():
            problem = probe.family_problem(family, options)
            if problem is not None:
                raise SpecError(
                    f"probe '{probe.name}' cannot score '{model}', an {family.value} model: "
                    f"{problem}; drop one of them from the study"
                )
    if spec.similarity:
        from knowcomp.analysis import default_texts

        default_texts(spec.similarity, data_dir=spec.data_dir)  # the texts exist (LAMBADA)
    for sweep in spec.sweeps:
        for _, recipe in sweep.recipes():
            try:
                parsed = parse_recipe(recipe)
            except KnowcompError as err:  # a RecipeError names the step; add the sweep
                raise SpecError(f"recipe sweep '{sweep.name}': {err}") from None
            problem = parsed.placement_problem(placement.device, placement.dtype)
            if problem is not None:
                raise SpecError(f"recipe sweep '{sweep.name}': {problem}")
            if sweep.recover:
                _check_recoverable(spec, sweep.name, parsed, placement)
    if spec.recovers:
        _check_recovery(spec, families)
    if spec.precision is not None and spec.recovers and not spec.recovery.save_adapters:
        # a recovered trial extended later (resumed, or a tighter precision) must score its
        # new items with the adapter its stored items were scored with
        raise SpecError("precision with recover steps keeps each trial's adapter to extend it "
                        "later; drop 'save_adapters: false' from 'recovery' (or drop "
                        "'precision')")  # fmt: skip
    return expand(spec)


def _check_recoverable(spec: StudySpec, sweep: str, recipe: Any, placement: Any) -> None:
    """Recovery trains through the compressed model: torch.ao's dynamic int8 layers pass no
    gradient (on CPU, `backend=auto` is torch.ao)."""
    from knowcomp.recovery.methods import check_recipe_trainable

    try:
        check_recipe_trainable(
            recipe, on_cpu=spec.device_map is None and placement.device.type == "cpu"
        )
    except KnowcompError as err:
        raise SpecError(f"recipe sweep '{sweep}': {err}") from None


def _check_recovery(spec: StudySpec, families: dict[str, Any]) -> None:
    """The training text exists, and every model whose family the config tells (`families`,
    None where it cannot be read cheaply: checked when the model loads) is a decoder: recovery
    trains with next-token loss."""
    from knowcomp.compress.calibration import CalibrationSpec
    from knowcomp.models.forward import decoder_problem

    source = spec.recovery.calibration
    try:
        CalibrationSpec(source, data_dir=str(spec.data_dir) if spec.data_dir else None)
    except KnowcompError as err:
        raise SpecError(f"recovery: {err}") from None
    for model, family in families.items():
        if family is None:
            continue
        problem = decoder_problem(family, "recover steps", "train with next-token loss and need")
        if problem:
            raise SpecError(
                f"model '{model}' is an {family.value} model; {problem} "
                "(drop 'recover' or the model)"
            )
