"""An anytime-valid interval for a paired drop: the betting confidence sequence.

Adaptive evaluation (`knowcomp run --precision`) looks at the drop's interval after every
chunk of items and stops once it is narrow enough. A fixed-sample interval (`paired_drop`) is
not valid under that rule: checked often enough, it excludes the truth by chance. A confidence
sequence is: with probability at least 95%, it holds the true mean at *every* number of items
at once, so also at the one where a data-dependent rule stops.

The sequence here is Waudby-Smith and Ramdas's (2023, "Estimating means of bounded random
variables by betting", JRSS-B) hedged-capital confidence sequence with predictable plug-in bets,
for per-item paired differences d = baseline - trial in [-1, 1] (every headline score is a
share or a value in [0, 1], so its differences are). In x = (d + 1) / 2 in [0, 1], for each
candidate mean m two bettors bet on x > m and x < m with predictable stakes; a candidate whose
(averaged) wealth reaches 1/alpha is rejected (Ville's inequality bounds the chance that the
true mean ever is by alpha). The set of candidates not rejected, computed on a grid of `step`
and widened outward by one step, is the interval. The `confseq` package implements it but does
not build here (C++ extension), so it is written out; `tests/test_sequential.py` checks it
against a direct, candidate-by-candidate computation and its coverage under the stopping rule.

The items are taken as random draws from the task (the adaptive driver scores them in a seeded
random order), as the fixed-sample intervals also take them; LAMA's relations count as fixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from knowcomp.analysis.intervals import ALPHA, Estimate

STEP = 0.0005  # grid of candidate drops, in units of d (0.05 points)
BET_CAP = 0.5  # a stake never risks more than half the wealth (c in the paper)
METHOD = "betting confidence sequence (anytime-valid)"
_BLOCK = 256  # items per vectorised update: bounds memory at _BLOCK x grid floats


def _stakes(x: np.ndarray, alpha: float) -> np.ndarray:
    """The predictable plug-in stake of each item: sqrt(2 log(2/alpha) / (var t log(1 + t)))
    with the running, regularised variance of the items before it (the paper's eq. 26-27)."""
    n = len(x)
    t = np.arange(1, n + 1, dtype=float)
    means = (0.5 + np.cumsum(x)) / (t + 1)  # mu_hat_t, items 1..t
    squares = np.cumsum((x - means) ** 2)
    variance = (0.25 + squares) / (t + 1)  # sigma_hat^2_t
    before = np.concatenate([[0.25], variance[:-1]])  # sigma_hat^2_{t-1}: predictable
    return np.sqrt(2 * math.log(2 / alpha) / (before * t * np.log1p(t)))


def _grid(step: float) -> np.ndarray:
    points = round(1 / (step / 2))  # x-space step is half the d-space step
    return np.linspace(0.0, 1.0, points + 1)


def interval_path(
    differences: Sequence[float] | np.ndarray,
    stops: Sequence[int],
    *,
    alpha: float = ALPHA,
    step: float = STEP,
) -> list[Estimate]:
    """The confidence sequence of the mean of `differences` (each in [-1, 1], in the order
    they were observed) after the first n items, for every n in `stops` (increasing). Each
    interval is intersected with the ones before it (still valid: the truth is in all of them
    at once), so only the candidates still kept are followed, which keeps long runs cheap."""
    d = np.asarray(differences, dtype=float)
    if d.size and (d.min() < -1 - 1e-12 or d.max() > 1 + 1e-12):
        raise ValueError("paired differences must lie in [-1, 1]")
    if list(stops) != sorted(stops) or (stops and (stops[0] < 1 or stops[-1] > len(d))):
        raise ValueError(f"stops must increase within 1..{len(d)}, got {list(stops)}")
    x = np.clip((d + 1) / 2, 0.0, 1.0)
    stakes = _stakes(x, alpha)
    m = _grid(step)  # the candidates still kept
    up = np.zeros(len(m))  # log wealth of each candidate's two bettors
    down = np.zeros(len(m))
    out, done = [], 0
    for stop in stops:
        cap_up = BET_CAP / np.maximum(m, 1e-12)  # the stake on x > m never exceeds c / m
        cap_down = BET_CAP / np.maximum(1 - m, 1e-12)
        for start in range(done, stop, _BLOCK):
            end = min(start + _BLOCK, stop)
            xs, lam = x[start:end, None], stakes[start:end, None]
            up += np.log1p(np.minimum(lam, cap_up) * (xs - m)).sum(axis=0)
            down += np.log1p(-np.minimum(lam, cap_down) * (xs - m)).sum(axis=0)
        done = stop
        wealth = np.logaddexp(up, down) + math.log(0.5)  # half the capital with each bettor
        kept = wealth < math.log(1 / alpha)
        if not kept.any():  # every grid point rejected between two of them: keep the least
            kept = wealth == wealth.min()
        m, up, down = m[kept], up[kept], down[kept]
        out.append(_estimate(d[:stop], m[0], m[-1], step))
    return out


def _estimate(d: np.ndarray, first: float, last: float, step: float) -> Estimate:
    """The interval from the first to the last candidate kept, one grid step outward (the
    set's true ends lie between a kept and a rejected grid point), in d units."""
    low = 2 * max(first - step / 2, 0.0) - 1
    high = 2 * min(last + step / 2, 1.0) - 1
    value = float(d.mean())
    return Estimate(value, min(low, value), max(high, value), len(d), METHOD)


def confidence_sequence(
    differences: Sequence[float] | np.ndarray, *, alpha: float = ALPHA, step: float = STEP
) -> Estimate:
    """The confidence sequence after all of `differences`."""
    return interval_path(differences, [len(differences)], alpha=alpha, step=step)[0]


def half_width(estimate: Estimate) -> float:
    """Half the interval's width, in the estimate's units: what `--precision` bounds."""
    return (estimate.high - estimate.low) / 2


def chunk_ends(total: int, first: int = 64, growth: float = 1.5) -> list[int]:
    """Item counts after each chunk: `first`, then `growth` times more each time, up to
    `total` (geometric, so the checks cost little and the overshoot past the needed count is
    at most `growth - 1` of it)."""
    ends, n = [], min(first, total)
    while n < total:
        ends.append(n)
        n = min(total, max(n + 1, math.ceil(n * growth)))
    ends.append(total)
    return ends
