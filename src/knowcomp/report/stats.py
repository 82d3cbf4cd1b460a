"""Averages the report needs: over seeds (mean and standard deviation) and over probes.

An `Arm` is one compression of one model (one recipe), with its points for every seed and
probe. Drops are averaged over probes within a seed first, then over seeds, so the standard
deviation is the spread between seeds, as in the study's Table 1. A value from one seed carries
instead its 95% interval over items (`Cell.low`, `Cell.high`): the paired interval of a drop,
the interval of a score, and for an average over probes the stratified bootstrap's
(`report.uncertainty`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from knowcomp.analysis.intervals import Estimate
from knowcomp.report.frame import BaselinePoint, Compression, Frame, Point
from knowcomp.report.uncertainty import Intervals, mean_of_draws, percentile_interval


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int  # how many seeds
    low: float | None = None  # 95% interval over items (one seed), same units as `mean`
    high: float | None = None
    p_value: float | None = None  # of "no drop", for a drop with a paired test
    # adaptive evaluation: the items the drop rests on; `low`/`high` are then its anytime-valid
    # confidence sequence, not a fixed-sample interval
    items: int | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def adaptive(self) -> bool:
        return self.items is not None


def cell(values: Iterable[float], interval: tuple[float, float] | None = None,
         p_value: float | None = None) -> Cell | None:  # fmt: skip
    """Mean and SD over seeds; with one seed, the item interval given (if any)."""
    values = list(values)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    if len(values) > 1 or interval is None:
        return Cell(statistics.fmean(values), std, len(values))
    return Cell(values[0], 0.0, 1, interval[0], interval[1], p_value)


def estimate_cell(estimate: Estimate | None, factor: float = 1.0) -> Cell | None:
    """A one-seed cell from an estimate (x `factor`: 100 turns fractions into percent)."""
    if estimate is None:
        return None
    from knowcomp.analysis.sequential import METHOD

    e = estimate.scaled(factor)
    return Cell(e.value, 0.0, 1, e.low, e.high, e.p_value, e.n if e.method == METHOD else None)


def draws_interval(draws: np.ndarray | None, factor: float = 100.0) -> tuple[float, float] | None:
    if draws is None:
        return None
    low, high = percentile_interval(draws * factor)
    return low, high


@dataclass
class Arm:
    model: str
    recipe: str
    compression: Compression
    points: list[Point] = field(default_factory=list)
    intervals: Intervals | None = field(default=None, repr=False)

    @property
    def seeds(self) -> list[int]:
        return sorted({p.seed for p in self.points})

    @property
    def probes(self) -> list[str]:
        return list(dict.fromkeys(p.probe for p in self.points))

    @property
    def sweeps(self) -> list[str]:
        return list(dict.fromkeys(p.sweep for p in self.points))

    @property
    def fraction(self) -> float | None:
        values = [p.fraction for p in self.points if p.fraction is not None]
        return statistics.fmean(values) if values else None

    def score(self, probe: str) -> Cell | None:
        """The probe's headline score in percent, over seeds (one seed: with its interval)."""
        mine = [p for p in self.points if p.probe == probe]
        if len(mine) == 1 and mine[0].score_ci is not None:
            return estimate_cell(mine[0].score_ci, 100)
        return cell(100 * p.value for p in mine)

    def drop_of(self, probe: str) -> Cell | None:
        """The probe's drop in points, over seeds (one seed: its paired interval and p-value)."""
        mine = [p for p in self.points if p.probe == probe and p.drop is not None]
        if len(mine) == 1 and mine[0].drop_ci is not None:
            return estimate_cell(mine[0].drop_ci)
        return cell(p.drop for p in mine)  # type: ignore[misc]

    def drop(self, probes: Iterable[str] | None = None, kind: str | None = None) -> Cell | None:
        """Drop in percentage points averaged over `probes` (all it has, if None), per seed,
        then over seeds. A seed missing one of the named probes, or its baseline, is left out."""
        wanted = None if probes is None else set(probes)
        by_seed: dict[int, dict[str, float]] = defaultdict(dict)
        for p in self.points:
            if p.drop is None or (kind is not None and p.kind != kind):
                continue
            if wanted is None or p.probe in wanted:
                by_seed[p.seed][p.probe] = p.drop
        kept = {seed: drops for seed, drops in by_seed.items()
                if drops and (wanted is None or set(drops) == wanted)}  # fmt: skip
        per_seed = [statistics.fmean(drops.values()) for drops in kept.values()]
        interval = None
        if len(kept) == 1 and self.intervals is not None:
            ((seed, drops),) = kept.items()
            keys = {p.probe: p.trial_key for p in self.points if p.seed == seed}
            draws = [self.intervals.drop_draws(keys[probe], probe) for probe in drops]
            interval = draws_interval(mean_of_draws(draws))
        return cell(per_seed, interval)


def arms(frame: Frame) -> list[Arm]:
    """One arm per model x recipe, in store order."""
    found: dict[tuple[str, str], Arm] = {}
    for point in frame.points:
        key = (point.model, point.recipe)
        if key not in found:
            found[key] = Arm(point.model, point.recipe, point.compression,
                             intervals=frame.intervals)  # fmt: skip
        found[key].points.append(point)
    return list(found.values())


def baseline_score(frame: Frame, model: str, probe: str) -> Cell | None:
    mine = _baselines(frame, model, probe)
    if len(mine) == 1 and mine[0].score_ci is not None:
        return estimate_cell(mine[0].score_ci, 100)
    return cell(100 * b.value for b in mine)


def majority_drop(frame: Frame, model: str, probes: Iterable[str]) -> float | None:
    """The drop (points) that would bring the model down to majority-class accuracy, averaged
    over those of `probes` that have a majority class (multiple choice), and over seeds."""
    gaps = []
    for probe in probes:
        values = [100 * (b.value - b.majority) for b in _baselines(frame, model, probe)
                  if b.majority is not None]  # fmt: skip
        if values:
            gaps.append(statistics.fmean(values))
    return statistics.fmean(gaps) if gaps else None


def _baselines(frame: Frame, model: str, probe: str) -> list[BaselinePoint]:
    return [b for b in frame.baselines if b.model == model and b.probe == probe]
