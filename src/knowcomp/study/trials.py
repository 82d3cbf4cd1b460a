"""Expand a study spec into trials, and check everything that can be checked without a model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from knowcomp.errors import KnowcompError
from knowcomp.study.spec import SpecError, StudySpec

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

    @property
    def key(self) -> str:
        fields = {
            "model": self.model, "recipe": self.recipe, "seed": self.seed, "limit": self.limit,
            "lama_mode": self.lama_mode, "dtype": self.dtype,
        }  # fmt: skip
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]

    @property
    def is_baseline(self) -> bool:
        return self.recipe is None

    def to_dict(self) -> dict:
        return asdict(self)


def expand(spec: StudySpec) -> list[Trial]:
    """Every trial of the spec, baselines first, grouped by model (each model loads once)."""
    trials: list[Trial] = []
    common = {"limit": spec.limit, "lama_mode": spec.lama_mode, "dtype": spec.dtype}
    for model in spec.models:
        seeds_used: list[int] = []
        compressed: list[Trial] = []
        for sweep in spec.sweeps:
            for seed in sweep.seeds or spec.seeds:
                if seed not in seeds_used:
                    seeds_used.append(seed)
                for level, recipe in sweep.recipes():
                    compressed.append(Trial(model, sweep.name, recipe, level, seed, **common))
        trials += [Trial(model, BASELINE, None, None, s, **common) for s in seeds_used]
        trials += _unique(compressed)
    return trials


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
    from knowcomp.models.loading import DTYPES, check_model
    from knowcomp.probes.registry import get_probe

    if spec.lama_mode not in ("next-token", "candidates", "generate"):
        raise SpecError(
            f"unknown lama_mode '{spec.lama_mode}'; choose next-token, candidates or generate"
        )
    if spec.dtype not in DTYPES:
        raise SpecError(f"unknown dtype '{spec.dtype}'; choose one of: {', '.join(DTYPES)}")
    if not spec.probes:
        raise SpecError("the study has no probes; set probes: [lama-trex, piqa] or --probes")
    for probe in spec.probes:
        get_probe(probe)
    for model in spec.models:
        check_model(model)
    if spec.similarity:
        from knowcomp.analysis import default_texts

        default_texts(spec.similarity, data_dir=spec.data_dir)  # the texts exist (LAMBADA)
    for sweep in spec.sweeps:
        for _, recipe in sweep.recipes():
            try:
                parse_recipe(recipe)
            except KnowcompError as err:  # a RecipeError names the step; add the sweep
                raise SpecError(f"recipe sweep '{sweep.name}': {err}") from None
    return expand(spec)
