"""The betting confidence sequence: against a direct computation, and its coverage under the
adaptive stopping rule (seeded simulations, 1,000 data sets per setting, known true drop)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from knowcomp.analysis.sequential import (
    BET_CAP,
    chunk_ends,
    confidence_sequence,
    half_width,
    interval_path,
)

REPS = 1000


def _direct(d: list[float], step: float, alpha: float = 0.05) -> tuple[float, float]:
    """The same sequence, candidate by candidate and item by item, in plain Python: the
    paper's formulas written out (mu_hat, sigma_hat^2, lambda, the two bettors' wealth)."""
    x = [(v + 1) / 2 for v in d]
    stakes, total, squares = [], 0.0, 0.0
    for t, value in enumerate(x, start=1):
        variance_before = (0.25 + squares) / t  # sigma_hat^2_{t-1} = (1/4 + sum) / t
        stakes.append(math.sqrt(2 * math.log(2 / alpha) / (variance_before * t * math.log(1 + t))))
        total += value
        squares += (value - (0.5 + total) / (t + 1)) ** 2
    kept = []
    points = round(2 / step)
    for j in range(points + 1):
        m = j / points
        up = down = 1.0
        for lam, value in zip(stakes, x, strict=True):
            up *= 1 + min(lam, BET_CAP / max(m, 1e-12)) * (value - m)
            down *= 1 - min(lam, BET_CAP / max(1 - m, 1e-12)) * (value - m)
        if 0.5 * up + 0.5 * down < 1 / alpha:
            kept.append(m)
    return 2 * max(kept[0] - step / 2, 0) - 1, 2 * min(kept[-1] + step / 2, 1) - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_direct_computation(seed):
    rng = np.random.default_rng(seed)
    d = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0, 1.0], size=40).tolist()
    d[:3] = [0.25, -0.5, 0.75]  # continuous values too
    low, high = _direct(d, step=0.01)
    e = confidence_sequence(d, step=0.01)
    assert e.low == pytest.approx(low) and e.high == pytest.approx(high)
    assert e.value == pytest.approx(np.mean(d))


def test_path_intersects_prefixes_and_narrows():
    """Each interval of the path is the running intersection of the prefixes' intervals."""
    d = np.random.default_rng(3).choice([-1.0, 0.0, 1.0], p=[0.05, 0.85, 0.1], size=600)
    path = interval_path(d, [50, 200, 600], step=0.002)
    low, high = -1.0, 1.0
    for n, e in zip([50, 200, 600], path, strict=True):
        alone = confidence_sequence(d[:n], step=0.002)
        low, high = max(low, alone.low), min(high, alone.high)
        assert (e.low, e.high, e.n) == (pytest.approx(low), pytest.approx(high), n)
    assert half_width(path[0]) > half_width(path[1]) > half_width(path[2])


def test_rejects_values_outside_range():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        confidence_sequence([0.5, 1.5])


def test_chunk_ends_grow_to_total():
    assert chunk_ends(10) == [10]
    ends = chunk_ends(1000)
    assert ends[0] == 64 and ends[-1] == 1000 and ends == sorted(set(ends))
    assert all(b <= math.ceil(a * 1.5) for a, b in itertools.pairwise(ends))


def _stopped(d: np.ndarray, precision: float, step: float):
    """The adaptive rule: check after each chunk, stop when the half-width is at most
    `precision` (in d units) or the items run out; the interval where it stopped."""
    ends = chunk_ends(len(d))
    for e in interval_path(d, ends, step=step):
        if half_width(e) <= precision:
            return e
    return e


def _binary(rng, n, lost, gained):
    """Paired 0/1 scores: the baseline right with probability 0.6; lost/gained items."""
    u = rng.random(n)
    return np.where(u < lost, 1.0, np.where(u < lost + gained, -1.0, 0.0))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("lost", "gained", "precision"), [(0.08, 0.02, 0.04), (0.03, 0.03, 0.03), (0.25, 0.05, 0.08)]
)
def test_binary_coverage_under_stopping(lost, gained, precision):
    rng = np.random.default_rng(11)
    truth = lost - gained
    covered, items = 0, 0
    for _ in range(REPS):
        e = _stopped(_binary(rng, 1500, lost, gained), precision, step=0.004)
        covered += e.low <= truth <= e.high
        items += e.n
    assert covered / REPS >= 0.95, covered
    assert items < REPS * 1500  # the rule did stop early


@pytest.mark.integration
def test_continuous_coverage_under_stopping():
    """MRR-like scores: baseline a ~ Beta(2, 3), trial a * U with U ~ Uniform(0.8, 1); the
    true drop is E[a] E[1 - U] = 0.4 * 0.1 = 0.04."""
    rng = np.random.default_rng(12)
    covered = 0
    for _ in range(REPS):
        a = rng.beta(2, 3, 1500)
        d = a - a * rng.uniform(0.8, 1.0, 1500)
        e = _stopped(d, precision=0.01, step=0.004)
        covered += e.low <= 0.04 <= e.high
    assert covered / REPS >= 0.95, covered
