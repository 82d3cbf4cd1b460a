"""A study's side of adaptive evaluation (`precision:` in a spec, `knowcomp run --precision`).

The measuring itself (chunks, the paired confidence sequence, the stopping rule, the lazily
extended baseline) is `knowcomp.pipeline.adaptive`, shared with `knowcomp eval --precision`.
Here a trial finds its stored result and its baseline's (the same model, seed and evaluation
options, no compression and no recovery), so a resumed study continues where it stopped and a
tighter precision extends the stored trials; the baselines extended on the way are handed to
the driver, which stays the only writer of the store. A recovered trial is measured the same
way: its drop is the baseline's score minus the recovered model's, item by item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from knowcomp.pipeline.adaptive import (
    Progress,
    Scorer,
    Sequential,
    baseline_result,
    measure,
    measure_baseline,
)
from knowcomp.probes.base import Probe, RunOptions

Reader = Callable[[str, str], "dict[str, Any] | None"]  # (trial key, probe) -> stored result


def baseline_key(trial: Any) -> str:
    """The key of the trial's baseline: the same model, seed and evaluation options, no
    compression and no recovery."""
    from knowcomp.study.trials import BASELINE

    return replace(trial, sweep=BASELINE, recipe=None, level=None, recover=None, train=None).key


@dataclass
class AdaptiveRun:
    """The study runner's side of adaptive evaluation: the precision, a reader of stored
    results, and the baseline results extended on the way (the runner writes them with the
    trial, so the driver stays the only writer)."""

    precision: float
    read: Reader
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # the baselines this run extended, newest first read: a Ray actor's reader is a snapshot
    # taken when its trial was sent, older than what the actor's earlier trials scored
    extended: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def run_probe(
        self, trial: Any, probe: Probe, options: RunOptions, scorer: Scorer,
        baseline_scorer: Scorer,
    ) -> dict[str, Any]:  # fmt: skip
        """The trial's result for `probe` (a baseline: its first chunk)."""
        stored = self.read(trial.key, probe.name)
        if trial.is_baseline:
            stored = further(stored, self.extended.get((trial.key, probe.name)))
            result = measure_baseline(probe, options, stored, scorer)
            self.extended[(trial.key, probe.name)] = result  # what the next trials pair with
            return result
        key = baseline_key(trial)
        known = further(self.read(key, probe.name), self.extended.get((key, probe.name)))
        baseline = Progress.resume(probe, options, known)
        before = baseline.share
        result = measure(probe, options, self.precision, stored, scorer, baseline,
                         baseline_scorer)  # fmt: skip
        if baseline.share > before:
            update = baseline_result(baseline, result["sequential"]["pool"])
            self.updates.append((key, update))
            self.extended[(key, probe.name)] = update
        return result

    def take_updates(self) -> list[tuple[str, dict[str, Any]]]:
        updates, self.updates = self.updates, []
        return updates


def further(*results: dict[str, Any] | None) -> dict[str, Any] | None:
    """Of stored results of one trial and probe, the one that scored the most items (an
    exhaustive result, without `sequential`, scored them all)."""
    found = [r for r in results if r is not None]
    return max(found, key=scored_share, default=None)


def scored_share(result: dict[str, Any]) -> float:
    """The share of the item draws a stored result covers (1: every item)."""
    sequential = Sequential.of(result.get("sequential"))
    return 1.0 if sequential is None else sequential.share


def stored_reader(stored: dict[tuple[str, str], dict[str, Any]]) -> Reader:
    """A reader over results the driver read for a trial before sending it to a Ray actor
    (the trial's own and its baseline's, by (trial key, probe))."""
    return lambda key, probe: stored.get((key, probe))
