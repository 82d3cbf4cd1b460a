"""Tests of the findings: a comparison of compressions as a paired contrast on shared items.

A finding compares drops, and a drop is baseline minus compressed on the same items, so the
difference of two drops (or a difference of slopes) is a weighted sum of the compared trials'
per-item scores: `Comparison.specs` lists, per model, the probes and the (trial, weight) terms
(`None` stands for the model's baseline). `evaluate` computes that weighted sum item by item on
the items every term scored, per probe, pools probes and models as independent strata, and
returns the pooled contrast with its interval and t test (`analysis.intervals.contrast`).
Items of one probe seen under several seeds are one cluster each (the same item, correlated
across seeds); LAMA facts cluster by relation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from knowcomp.analysis.intervals import Estimate, cluster_codes, contrast
from knowcomp.report.frame import Frame
from knowcomp.report.stats import Arm

Term = tuple[Arm | None, float]  # a compression (None: the model's baseline) and its weight


@dataclass
class Comparison:
    """One tested difference; positive values support the finding's claim."""

    label: str  # e.g. "overall - attention"
    scale: float = 100.0  # display factor: fractions to points (10: points per 10% sparsity)
    unit: str = "points"
    specs: list[tuple[str, list[str], list[Term]]] = field(default_factory=list)

    @property
    def strata(self) -> int:
        return sum(len(probes) for _, probes, _ in self.specs)


def _key(frame: Frame, model: str, arm: Arm | None, seed: int, probe: str) -> str | None:
    if arm is None:
        return frame.baseline_keys.get((model, seed, probe))
    return next((p.trial_key for p in arm.points if p.seed == seed and p.probe == probe), None)


def _seeds(frame: Frame, model: str, terms: Sequence[Term], probe: str) -> list[int]:
    found: set[int] | None = None
    for arm, _ in terms:
        if arm is None:
            mine = {b.seed for b in frame.baselines if b.model == model and b.probe == probe}
        else:
            mine = {p.seed for p in arm.points if p.probe == probe}
        found = mine if found is None else found & mine
    return sorted(found or ())


def evaluate(frame: Frame, comparison: Comparison) -> Estimate | None:
    """The pooled contrast, or None where a term has no per-item records to pair."""
    strata: list[tuple[np.ndarray, np.ndarray | None]] = []
    for model, probes, terms in comparison.specs:
        weights = np.array([w for _, w in terms])
        for probe in probes:
            values: list[np.ndarray] = []
            clusters: list[str] = []
            seeds = _seeds(frame, model, terms, probe)
            for seed in seeds:
                keys = [_key(frame, model, arm, seed, probe) for arm, _ in terms]
                if None in keys:
                    return None
                found = frame.intervals.aligned(keys, probe)  # type: ignore[arg-type]
                if found is None:
                    return None
                values.append(weights @ found.rows)
                clusters += list(found.clusters or (str(k) for k in found.keys))
            if not values:
                return None
            strata.append((np.concatenate(values), cluster_codes(clusters)))
    return contrast(strata) if strata else None
