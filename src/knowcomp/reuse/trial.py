"""A study trial's use of the worker's prefix cache: the baseline records, later trials reuse.

The study worker holds one `PrefixCache` per loaded model and asks it, per trial, for a
`TrialReuse` (`for_trial`). With a budget above 0, the uncompressed baseline without adapters
records into the cache; a compressed trial without adapters serves what its recipe's change
point allows (`changes.change_point`), and keeps on its misses what it computed of the
baseline's states, so a worker whose cache is empty (a resumed study, a baseline read from the
baseline cache, a Ray actor that did not run the baseline) reuses from its second such trial
on; every other trial runs the plain path. Each probe then runs through `TrialReuse.run`,
which adds a note saying what was kept or reused.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from knowcomp.probes import engine
from knowcomp.probes.base import Probe, ProbeResult, RunOptions, run_probe
from knowcomp.reuse.changes import ChangePoint, Reuse, change_point
from knowcomp.reuse.prefix_cache import PrefixCache


class TrialReuse:
    """Runs a trial's probes recording into, serving from, or bypassing a prefix cache."""

    def __init__(self, cache: PrefixCache, mode: str, point: ChangePoint | None = None) -> None:
        self.cache, self.mode, self.point = cache, mode, point  # mode: record, serve or plain

    def run(self, probe: Probe, loaded: Any, options: RunOptions) -> ProbeResult:
        cache, model = self.cache, loaded.model
        if self.mode == "record":
            context = cache.recording(model)
        elif self.mode == "serve" and self.point is not None:
            context = cache.serving(model, self.point)
        else:
            context = nullcontext()
        with context, cache.probe(probe.name):
            result = run_probe(probe, loaded, options)
        note = None
        if self.mode == "record":
            note = cache.budget_note() if cache.over_budget else cache.held_note(probe.name)
        elif self.mode == "serve" and self.point is not None:
            note = cache.served_note(self.point)
        elif self.mode == "over_budget":
            note = cache.budget_note()
        if note:
            result.notes.append(note)
        return result


def for_trial(cache: PrefixCache, loaded: Any, session: Any, trial: Any) -> TrialReuse:
    """How `trial` (a `study.trials.Trial`, already compressed by `session`) uses `cache`."""
    if cache.budget <= 0 or trial.recover is not None or engine.per_sequence(loaded.model):
        return TrialReuse(cache, "plain")
    if trial.recipe is None:
        return TrialReuse(cache, "plain" if cache.over_budget else "record")
    point = recipe_change_point(loaded, session, trial.recipe, trial.seed)
    if point.reuse is Reuse.NONE:
        return TrialReuse(cache, "plain")
    if cache.over_budget:
        return TrialReuse(cache, "over_budget")
    return TrialReuse(cache, "serve", point)  # an empty cache fills on the trial's misses


def recipe_change_point(loaded: Any, session: Any, recipe: str, seed: int) -> ChangePoint:
    """The change point of a compact recipe on `session`'s model (its planned layers)."""
    from knowcomp.compress import parse_recipe

    planned = session.plan(parse_recipe(recipe), seed=seed)
    changed = {layer.name for step in planned for layer in step.layers}
    return change_point(loaded.model, loaded.family, changed)
