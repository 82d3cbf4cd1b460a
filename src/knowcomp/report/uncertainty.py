"""The per-item data behind the report's numbers, and their intervals.

`Intervals` reads each result's stored records once (`knowcomp.analysis.items`), pairs every
compressed (or recovered) trial with its baseline on the items both scored, and gives:

- per result, the interval of its score and, against the baseline, of its drop
  (`knowcomp.analysis.intervals.score_interval`, `paired_drop`): computed when the frame loads;
- bootstrap draws of a score, a drop, or (recovered share) of baseline, compressed and
  recovered on the same items, computed on demand and cached, so averages over probes (category
  averages, the plots' averaged drops, findings) get a stratified-bootstrap interval from the
  same draws: the mean of independent per-probe draws is a draw of the average.

A result without records (files written before records were kept, or records of another
protocol) has no interval; the report says so instead of guessing.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from knowcomp.analysis.intervals import (
    ALPHA,
    RESAMPLES,
    Estimate,
    Undefined,
    cluster_bootstrap_means,
    cluster_codes,
    paired_drop,
    score_interval,
    share_from_draws,
)
from knowcomp.analysis.items import Aligned, ItemValues, aligned, item_values

Key = tuple[str, str]  # (trial_key, probe)
Paired = tuple[np.ndarray, np.ndarray | None]  # (runs x items) values, items' cluster codes


@dataclass
class Intervals:
    """Per-item values by (trial_key, probe), baseline pairings, and cached draws."""

    items: dict[Key, ItemValues] = field(default_factory=dict)
    baseline_of: dict[Key, str] = field(default_factory=dict)  # trial's key -> baseline's key
    _draws: dict[tuple[str, ...], np.ndarray | None] = field(default_factory=dict)

    def add(self, trial_key: str, probe: str, records: list[dict], metric: str,
            value: float) -> ItemValues | None:  # fmt: skip
        values = item_values(records, metric, stored=value)
        if values is not None:
            self.items[(trial_key, probe)] = values
        return values

    def score(self, trial_key: str, probe: str) -> Estimate | None:
        values = self.items.get((trial_key, probe))
        if values is None:
            return None
        return score_interval(values.values, values.clusters)

    def paired(self, keys: Sequence[str], probe: str) -> Paired | None:
        """Rows of the trials `keys` on the items all of them scored, and the items' cluster
        codes; None where one has no values or they share no item."""
        found = self.aligned(keys, probe)
        return None if found is None else (found.rows, cluster_codes(found.clusters))

    def aligned(self, keys: Sequence[str], probe: str) -> Aligned | None:
        """The trials `keys` on the items all of them scored (with the items' keys)."""
        runs = [self.items.get((key, probe)) for key in keys]
        if any(run is None for run in runs):
            return None
        return aligned(runs)  # type: ignore[arg-type]

    def drop(self, trial_key: str, probe: str) -> Estimate | None:
        base = self.baseline_of.get((trial_key, probe))
        pair = None if base is None else self.paired((base, trial_key), probe)
        if pair is None:
            return None
        rows, codes = pair
        return paired_drop(rows[0], rows[1], codes)

    def draws(self, keys: Sequence[str], probe: str) -> np.ndarray | None:
        """(RESAMPLES, len(keys)) bootstrap means of the trials `keys` on their shared items,
        one draw for all of them (clusters resampled where items have them); seeded by the
        keys, so a report is the same every time it is written."""
        cache_key = (*keys, probe)
        if cache_key not in self._draws:
            pair = self.paired(keys, probe)
            if pair is None:
                self._draws[cache_key] = None
            else:
                seed = zlib.crc32("|".join(cache_key).encode())
                rng = np.random.default_rng(seed)
                self._draws[cache_key] = cluster_bootstrap_means(pair[0], pair[1], RESAMPLES, rng)
        return self._draws[cache_key]

    def score_draws(self, trial_key: str, probe: str) -> np.ndarray | None:
        found = self.draws((trial_key,), probe)
        return None if found is None else found[:, 0]

    def drop_draws(self, trial_key: str, probe: str) -> np.ndarray | None:
        base = self.baseline_of.get((trial_key, probe))
        found = None if base is None else self.draws((base, trial_key), probe)
        return None if found is None else found[:, 0] - found[:, 1]


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(draws, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


def mean_of_draws(draws: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Draws of the average of independent quantities (e.g. probes), None if one is missing."""
    if not draws or any(d is None for d in draws):
        return None
    return np.mean(np.stack(draws), axis=0)  # type: ignore[arg-type]


def share_interval(draws: Sequence[np.ndarray | None]) -> tuple[float, float] | Undefined | None:
    """The recovered share's interval from per-probe (R, 3) draws of baseline, compressed and
    recovered, averaged over probes (`knowcomp.analysis.intervals.share_from_draws`)."""
    if not draws or any(d is None for d in draws):
        return None
    return share_from_draws(np.mean(np.stack(draws), axis=0))  # type: ignore[arg-type]
