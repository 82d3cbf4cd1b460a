"""Uncertainty of scores and drops: intervals, paired tests, the recovered share.

Every function takes per-item values (and, where items share a relation or a passage, their
cluster ids) and returns an `Estimate`: the point value, a 95% interval, the p-value of "no
difference" where a test applies, and the name of the method, so a table can say what it shows.
Which method, and why:

- **An absolute score** (`score_interval`). Binary items (accuracy, P@1, exact match): the
  Wilson score interval (`scipy.stats.binomtest(...).proportion_ci`), which keeps its coverage
  near 0 and 1 where the normal interval does not. Continuous items (MRR, log-likelihood):
  scipy's BCa bootstrap of the mean.
- **A paired drop** (`paired_drop`), baseline minus trial on the same items. Binary: the
  Agresti-Min interval for a difference of matched proportions (the Wald interval of the 2x2
  table of agreements with 1/2 added to each cell; Agresti and Min 2005, *Biometrics*; scipy
  has no paired-proportion interval, which is why it is written here) and McNemar's exact test
  (`scipy.stats.binomtest` on the discordant pairs). Continuous: scipy's paired BCa bootstrap
  and the paired t-test (`scipy.stats.ttest_rel`).
- **Clustered items** (LAMA facts share a relation): a binary score or drop gets a
  cluster-robust standard error of the mean (Miller 2024, "Adding Error Bars to Evals", uses
  the sandwich form; here the leave-one-cluster-out jackknife, CR3, the same for clusters of
  equal size and more cautious for unequal ones) and a t interval and t test on G-1 degrees
  of freedom; a continuous
  one gets a cluster bootstrap (resampling whole clusters, written here since scipy's
  bootstrap resamples items). With fewer than two clusters, or no spread at all (within or
  between clusters), the unclustered method is used and the method name says so.
- **A finding's contrast** (`contrast`), a difference of drops pooled over probes and models:
  the mean of the strata's means with a t interval on Welch-Satterthwaite degrees of freedom
  (G - 1 per clustered stratum), because with a few relations a normal interval over a
  clustered SE is too narrow (`tests/test_intervals.py` shows it by simulation).
- **Averages over probes and the recovered share** (`bootstrap_strata`): a stratified
  bootstrap that resamples items (clusters where there are) within each probe, the same draw
  for every trial of that probe (so the pairing is kept), and recomputes the average or share;
  the percentile interval of the draws.

The confidence sequence of adaptive evaluation (anytime-valid, for evaluation that stops
early) has the same shape, per-item values in, an `Estimate` out: `analysis.sequential`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
RESAMPLES = 2000  # bootstrap draws: percentile ends settle to about 0.1 point at this size


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval (same units), and what it rests on."""

    value: float
    low: float
    high: float
    n: int  # items
    method: str  # e.g. "McNemar exact; Agresti-Min interval"
    p_value: float | None = None  # of "no difference", where a test applies
    clusters: int | None = None  # clusters the interval accounts for, if any
    se: float | None = None  # standard error, where the method has one (power uses it)
    dof: float | None = None  # degrees of freedom of a t interval, where it is one

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (x100: fractions to percent or points)."""
        se = None if self.se is None else self.se * abs(factor)
        low, high = sorted((self.low * factor, self.high * factor))
        return replace(self, value=self.value * factor, low=low, high=high, se=se)

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    def describe(self, digits: int = 1) -> str:
        """`5.0 [2.1, 7.9]`."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Undefined:
    """A quantity the data cannot define (a share of a loss that is not there), and why."""

    reason: str


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float)


def cluster_codes(clusters: Sequence[object] | np.ndarray | None) -> np.ndarray | None:
    """Integer codes 0..G-1 for cluster labels; None stays None."""
    if clusters is None:
        return None
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.int64)


def clustered_se(values: np.ndarray, codes: np.ndarray) -> float:
    """Cluster-robust standard error of the mean of `values` (items in clusters `codes`): the
    leave-one-cluster-out jackknife (CR3). With clusters of equal size it equals the sandwich
    estimator with its G/(G-1) factor; with unequal sizes (LAMA relations differ a lot) it is
    the more cautious of the two, as recommended for a few dozen clusters."""
    groups = int(codes.max()) + 1
    sums = np.bincount(codes, weights=values, minlength=groups)
    sizes = np.bincount(codes, minlength=groups)
    left_out = (sums.sum() - sums) / (len(values) - sizes)
    return math.sqrt((groups - 1) / groups * float(np.sum((left_out - left_out.mean()) ** 2)))


def _clusters_that_matter(codes: np.ndarray | None) -> int | None:
    """How many clusters, where clustering changes anything (two or more, some shared)."""
    if codes is None:
        return None
    groups = int(codes.max()) + 1 if len(codes) else 0
    return groups if 2 <= groups < len(codes) else None


def _t_estimate(value: float, se: float, n: int, groups: int, method: str) -> Estimate:
    dof = groups - 1
    half = stats.t.ppf(1 - ALPHA / 2, dof) * se
    p = float(2 * stats.t.sf(abs(value) / se, dof))
    return Estimate(value, value - half, value + half, n, method, p, groups, se)


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


# -- absolute scores --------------------------------------------------------------------------
def score_interval(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray | None = None,
    *,
    n_resamples: int = RESAMPLES,
) -> Estimate:
    """The mean of per-item `values` (0/1 or continuous) with its 95% interval."""
    x = _as_array(values)
    n = len(x)
    if n == 0:
        raise ValueError("no items to estimate a score from")
    mean = float(x.mean())
    codes = cluster_codes(clusters)
    groups = _clusters_that_matter(codes)
    binary = _is_binary(x)
    if groups is not None and np.ptp(x) > 0 and clustered_se(x, codes) > 0:
        if binary:  # a share: the interval stays within 0 and 1
            e = _t_estimate(mean, clustered_se(x, codes), n, groups,
                            f"clustered SE ({groups} clusters)")  # fmt: skip
            return replace(e, low=max(e.low, 0.0), high=min(e.high, 1.0))
        low, high = _percentile(cluster_bootstrap_means(x[None, :], codes, n_resamples)[:, 0])
        return Estimate(mean, low, high, n, f"cluster bootstrap ({groups} clusters)",
                        clusters=groups)  # fmt: skip
    if binary:
        k = int(x.sum())
        ci = stats.binomtest(k, n).proportion_ci(CONFIDENCE, method="wilson")
        se = math.sqrt(mean * (1 - mean) / n)
        return Estimate(mean, float(ci.low), float(ci.high), n, "Wilson", se=se)
    if np.ptp(x) == 0:
        return Estimate(mean, mean, mean, n, "no spread")
    result = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, method="BCa",
                             confidence_level=CONFIDENCE, rng=np.random.default_rng(0))  # fmt: skip
    ci = result.confidence_interval
    return Estimate(mean, float(ci.low), float(ci.high), n, "bootstrap (BCa)",
                    se=float(result.standard_error))  # fmt: skip


# -- paired drops -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Table2x2:
    """Agreement of two binary scorings of the same items."""

    both: int  # right in both
    only_first: int  # right in the first (the baseline) only: lost
    only_second: int  # right in the second only: gained
    neither: int

    @classmethod
    def of(cls, first: np.ndarray, second: np.ndarray) -> Table2x2:
        a, b = first.astype(bool), second.astype(bool)
        return cls(int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b)),
                   int(np.sum(~a & ~b)))  # fmt: skip

    @property
    def n(self) -> int:
        return self.both + self.only_first + self.only_second + self.neither

    @property
    def discordant(self) -> int:
        return self.only_first + self.only_second


def mcnemar_exact(table: Table2x2) -> float:
    """McNemar's exact test: two-sided binomial test of the lost items among the discordant
    ones against one half (1.0 when no item changed)."""
    if table.discordant == 0:
        return 1.0
    return float(stats.binomtest(table.only_first, table.discordant, 0.5).pvalue)


def agresti_min(table: Table2x2) -> tuple[float, float]:
    """95% interval of P(first right) - P(second right) for matched pairs: the Wald interval
    with 1/2 added to each cell (Agresti and Min 2005)."""
    n = table.n + 2
    b, c = table.only_first + 0.5, table.only_second + 0.5
    centre = (b - c) / n
    se = math.sqrt(max((b + c) - (b - c) ** 2 / n, 0.0)) / n
    z = stats.norm.ppf(1 - ALPHA / 2)
    return max(float(centre - z * se), -1.0), min(float(centre + z * se), 1.0)


def paired_drop(
    baseline: Sequence[float] | np.ndarray,
    trial: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray | None = None,
    *,
    n_resamples: int = RESAMPLES,
) -> Estimate:
    """Baseline minus trial, item by item (same items, same order), with its 95% interval and
    the p-value of "no drop"; see the module docstring for the method."""
    a, b = _as_array(baseline), _as_array(trial)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        raise ValueError("no items to compare")
    d = a - b
    value = float(d.mean())
    codes = cluster_codes(clusters)
    groups = _clusters_that_matter(codes)
    binary = _is_binary(a) and _is_binary(b)
    if groups is not None and np.ptp(d) > 0 and clustered_se(d, codes) > 0:
        if binary:
            return _t_estimate(value, clustered_se(d, codes), n, groups,
                               f"clustered SE, t test ({groups} clusters)")  # fmt: skip
        draws = cluster_bootstrap_means(np.stack([a, b]), codes, n_resamples)
        low, high = _percentile(draws[:, 0] - draws[:, 1])
        se = clustered_se(d, codes)
        p = float(2 * stats.t.sf(abs(value) / se, groups - 1))
        return Estimate(value, low, high, n, f"cluster bootstrap, clustered t test ({groups} "
                        "clusters)", p, groups, se)  # fmt: skip
    if binary:
        table = Table2x2.of(a, b)
        low, high = agresti_min(table)
        se = float(d.std()) / math.sqrt(n)
        return Estimate(value, low, high, n, "Agresti-Min interval, McNemar exact test",
                        mcnemar_exact(table), se=se)  # fmt: skip
    if np.ptp(d) == 0:
        return Estimate(value, value, value, n, "no spread", 1.0 if value == 0 else 0.0)
    result = stats.bootstrap((a, b), _mean_difference, paired=True, n_resamples=n_resamples,
                             method="BCa", confidence_level=CONFIDENCE,
                             rng=np.random.default_rng(0))  # fmt: skip
    ci = result.confidence_interval
    p = float(stats.ttest_rel(a, b).pvalue)
    return Estimate(value, float(ci.low), float(ci.high), n, "paired bootstrap (BCa), paired t "
                    "test", p, se=float(result.standard_error))  # fmt: skip


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


# -- contrasts of several trials on the same items (the findings) -----------------------------
def contrast(strata: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> Estimate:
    """The mean over strata (probes, models) of each stratum's mean per-item contrast value
    (e.g. drop of one compression minus drop of another, on the same items), with a t interval
    and t test; strata are independent, items within one are clustered where codes are given
    (cluster-robust SE), else independent.

    The degrees of freedom are the Welch-Satterthwaite combination of each stratum's (G - 1
    for a clustered stratum of G clusters, n - 1 for n independent items): with few clusters
    (Google-RE's 3 relations, a handful of probes) the normal approximation over a clustered
    SE is too narrow, and with many the t is the normal. Written here because scipy's t tests
    take no clustered or pooled standard error."""
    if not strata:
        raise ValueError("no strata to pool")
    means, variances, dofs, n, groups = [], [], [], 0, 0
    for values, codes in strata:
        x = _as_array(values)
        means.append(float(x.mean()))
        counted = _clusters_that_matter(codes)
        if counted is not None:
            variances.append(clustered_se(x, codes) ** 2)
            dofs.append(counted - 1)
            groups += counted
        else:
            variances.append(float(x.var(ddof=1)) / len(x) if len(x) > 1 else 0.0)
            dofs.append(max(len(x) - 1, 1))
        n += len(x)
    value = float(np.mean(means))
    se = math.sqrt(sum(variances)) / len(strata)
    dof = satterthwaite_dof(variances, dofs)
    no_spread = 1.0 if value == 0 else 0.0
    if se > 0:
        half = float(stats.t.ppf(1 - ALPHA / 2, dof)) * se
        p = float(2 * stats.t.sf(abs(value) / se, dof))
    else:
        half, p = 0.0, no_spread
    shown = f"{dof:.3g}" if dof < 100 else f"{dof:.0f}"
    method = f"paired contrast, t test on {shown} df" + (" (clustered SE)" if groups else "")
    return Estimate(value, value - half, value + half, n, method, p, groups or None, se, dof)


def p_value_against(estimate: Estimate, null: float) -> float | None:
    """Two-sided p-value of "the true value is `null`" (a threshold or a margin, not only 0)
    from an estimate with a standard error: t on its degrees of freedom, else normal."""
    if estimate.se is None:
        return None
    if estimate.se == 0:
        return 1.0 if estimate.value == null else 0.0
    score = abs(estimate.value - null) / estimate.se
    if estimate.dof is not None:
        return float(2 * stats.t.sf(score, estimate.dof))
    return float(2 * stats.norm.sf(score))


def draws_p_value(draws: np.ndarray, null: float) -> float:
    """Two-sided bootstrap p-value of "the true value is `null`": twice the smaller share of
    draws on either side of it (one added to each count, so it is never 0)."""
    below = (np.sum(draws <= null) + 1) / (len(draws) + 1)
    above = (np.sum(draws >= null) + 1) / (len(draws) + 1)
    return float(min(1.0, 2 * min(below, above)))


def satterthwaite_dof(variances: Sequence[float], dofs: Sequence[int]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance estimates,
    each on its own degrees of freedom; strata without spread carry no weight."""
    weighted = [(v, d) for v, d in zip(variances, dofs, strict=True) if v > 0]
    if not weighted:
        return float(max(sum(dofs), 1))
    total = sum(v for v, _ in weighted)
    return total**2 / sum(v**2 / d for v, d in weighted)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down), in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# -- bootstrap of averages --------------------------------------------------------------------
def cluster_bootstrap_means(
    rows: np.ndarray,
    codes: np.ndarray | None,
    n_resamples: int = RESAMPLES,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(n_resamples, k) bootstrap means of the k `rows` (k x n, the same n items), resampling
    clusters (items where `codes` is None), the same draw for every row."""
    rng = rng or np.random.default_rng(0)
    rows = np.atleast_2d(_as_array(rows))
    n = rows.shape[1]
    codes = np.arange(n) if codes is None else codes
    groups = int(codes.max()) + 1
    sums = np.stack([np.bincount(codes, weights=row, minlength=groups) for row in rows])
    sizes = np.bincount(codes, minlength=groups).astype(float)
    out = np.empty((n_resamples, rows.shape[0]))
    chunk = max(1, 4_000_000 // groups)  # bound the memory of the count matrix
    uniform = np.full(groups, 1.0 / groups)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        counts = rng.multinomial(groups, uniform, size=stop - start).astype(float)
        out[start:stop] = (counts @ sums.T) / (counts @ sizes)[:, None]
    return out


@dataclass(frozen=True)
class Stratum:
    """One probe's items: k rows of per-item values (one per trial, same items), clusters."""

    rows: np.ndarray  # k x n
    codes: np.ndarray | None = None


def bootstrap_strata(
    strata: Sequence[Stratum], n_resamples: int = RESAMPLES, seed: int = 0
) -> list[np.ndarray]:
    """Per stratum, (n_resamples, k) bootstrap means, strata drawn independently."""
    rng = np.random.default_rng(seed)
    return [cluster_bootstrap_means(s.rows, s.codes, n_resamples, rng) for s in strata]


def _percentile(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(draws, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


def bootstrap_estimate(
    strata: Sequence[Stratum],
    statistic: Callable[[list[np.ndarray]], np.ndarray],
    *,
    method: str,
    n_resamples: int = RESAMPLES,
) -> Estimate:
    """`statistic` of the strata's per-row means (a list of (R, k) arrays -> (R,)), at the data
    and under a stratified bootstrap; the percentile interval."""
    point = [np.atleast_2d(_as_array(s.rows)).mean(axis=1)[None, :] for s in strata]
    value = float(statistic(point)[0])
    draws = statistic(bootstrap_strata(strata, n_resamples))
    low, high = _percentile(draws)
    n = sum(np.atleast_2d(s.rows).shape[1] for s in strata)
    return Estimate(value, low, high, n, method, se=float(np.std(draws, ddof=1)))


def average_estimate(strata: Sequence[Stratum], weights: Sequence[float]) -> Estimate:
    """The average over strata of sum_k weights[k] * mean(row k): with weights (1,) the mean
    score over probes, with (1, -1) the mean drop of trial 2 against trial 1."""
    w = np.asarray(weights, dtype=float)

    def statistic(means: list[np.ndarray]) -> np.ndarray:
        return np.mean([m @ w for m in means], axis=0)

    return bootstrap_estimate(strata, statistic, method="stratified bootstrap over probes")


def recovered_share(
    base: float | None, compressed: float | None, recovered: float | None
) -> float | None:
    """(recovered - compressed) / (base - compressed): the share of what compression lost that
    recovery won back (1 = all of it, 0 = nothing, negative = recovery made it worse). None
    where a score is missing or compression lost nothing (the ratio is not defined)."""
    if base is None or compressed is None or recovered is None or base <= compressed:
        return None
    return (recovered - compressed) / (base - compressed)


def share_from_draws(draws: np.ndarray) -> tuple[float, float] | Undefined:
    """The recovered share's percentile interval from (R, 3) bootstrap draws of baseline,
    compressed and recovered scores; `Undefined` where the loss it divides by is not clearly
    above zero (its interval reaches zero): a ratio over a loss that may be nothing has no
    useful interval. The few draws (under 2.5%) whose loss is not above zero have no share and
    are left out of the percentiles (with them, 0 / 0 made the interval NaN)."""
    loss = draws[:, 0] - draws[:, 1]
    low, high = _percentile(loss)
    if low <= 0:
        return Undefined(f"compression lost too little to share out (loss {100 * low:.1f} to "
                         f"{100 * high:.1f} points)")  # fmt: skip
    lost = loss > 0
    return _percentile((draws[lost, 2] - draws[lost, 1]) / loss[lost])


def recovered_share_estimate(strata: Sequence[Stratum]) -> Estimate | Undefined:
    """The recovered share of the average over strata (rows: base, compressed, recovered on
    the same items) with its stratified-bootstrap interval (`share_from_draws`)."""
    means = [np.atleast_2d(_as_array(s.rows)).mean(axis=1) for s in strata]
    base, compressed, recovered = np.mean(means, axis=0)
    draws = np.mean(bootstrap_strata(strata), axis=0)
    interval = share_from_draws(draws)
    value = recovered_share(base, compressed, recovered)
    if isinstance(interval, Undefined):
        return interval
    if value is None:
        return Undefined("compression lost nothing")
    n = sum(np.atleast_2d(s.rows).shape[1] for s in strata)
    return Estimate(value, *interval, n, "stratified bootstrap over probes")
