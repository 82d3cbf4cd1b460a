"""Averages the report needs: over seeds (mean and standard deviation) and over probes.

An `Arm` is one compression of one model (one recipe), with its points for every seed and
probe. Drops are averaged over probes within a seed first, then over seeds, so the standard
deviation is the spread between seeds, as in the study's Table 1.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from knowcomp.report.frame import BaselinePoint, Compression, Frame, Point


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int  # how many seeds


def cell(values: Iterable[float]) -> Cell | None:
    values = list(values)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Cell(statistics.fmean(values), std, len(values))


@dataclass
class Arm:
    model: str
    recipe: str
    compression: Compression
    points: list[Point] = field(default_factory=list)

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
        """The probe's headline score in percent, over seeds."""
        return cell(100 * p.value for p in self.points if p.probe == probe)

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
        per_seed = [
            statistics.fmean(drops.values())
            for drops in by_seed.values()
            if drops and (wanted is None or set(drops) == wanted)
        ]
        return cell(per_seed)


def arms(frame: Frame) -> list[Arm]:
    """One arm per model x recipe, in store order."""
    found: dict[tuple[str, str], Arm] = {}
    for point in frame.points:
        key = (point.model, point.recipe)
        if key not in found:
            found[key] = Arm(point.model, point.recipe, point.compression)
        found[key].points.append(point)
    return list(found.values())


def baseline_score(frame: Frame, model: str, probe: str) -> Cell | None:
    return cell(100 * b.value for b in _baselines(frame, model, probe))


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
