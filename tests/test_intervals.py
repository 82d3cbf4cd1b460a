"""Intervals, paired tests and power: coverage by simulation, and agreement with scipy.

Every simulation is seeded and draws at least 1,000 data sets per setting with a known true
difference; an interval covers when the truth lies inside it.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from knowcomp.analysis.intervals import (
    Stratum,
    Table2x2,
    Undefined,
    agresti_min,
    average_estimate,
    contrast,
    holm,
    mcnemar_exact,
    paired_drop,
    recovered_share_estimate,
    score_interval,
)
from knowcomp.analysis.power import exact_power, items_for_power, more_items, worst_discordance
from knowcomp.errors import KnowcompError

REPS = 1000


def _pairs(rng, n: int, base: float, lost: float, gained: float) -> tuple[np.ndarray, np.ndarray]:
    """Baseline right with probability `base`; an item right before is lost with probability
    `lost`, one wrong before is gained with `gained`."""
    a = rng.random(n) < base
    flip = rng.random(n)
    b = np.where(a, flip >= lost, flip < gained)
    return a.astype(float), b.astype(float)


@pytest.mark.parametrize(
    ("n", "base", "lost", "gained"),
    [(50, 0.6, 0.1, 0.05), (200, 0.3, 0.2, 0.02), (400, 0.05, 0.3, 0.01), (100, 0.5, 0.0, 0.0)],
)
def test_paired_binary_interval_covers(n, base, lost, gained):
    rng = np.random.default_rng(n)
    truth = base * lost - (1 - base) * gained
    covered = 0
    for _ in range(REPS):
        a, b = _pairs(rng, n, base, lost, gained)
        e = paired_drop(a, b)
        covered += e.low <= truth <= e.high
    assert covered / REPS >= 0.94, covered


@pytest.mark.integration
@pytest.mark.parametrize(("n", "p"), [(40, 0.1), (200, 0.5), (100, 0.03)])
def test_binary_score_interval_covers(n, p):
    rng = np.random.default_rng(7)
    covered = sum(
        (e := score_interval((rng.random(n) < p).astype(float))).low <= p <= e.high
        for _ in range(REPS)
    )
    assert covered / REPS >= 0.94, covered


@pytest.mark.integration
def test_continuous_paired_bootstrap_covers():
    """Log-likelihood-like items: skewed per-item differences with a known mean."""
    rng = np.random.default_rng(3)
    n, drop = 200, 0.1
    covered = 0
    for _ in range(REPS):
        base = rng.normal(-3.0, 1.0, n)
        trial = base - drop + (rng.gamma(2.0, 0.5, n) - 1.0)  # noise with mean 0, skewed
        e = paired_drop(base, trial, n_resamples=400)
        covered += e.low <= drop <= e.high
    assert covered / REPS >= 0.94, covered


def _clustered(rng, groups: int, size: int, base_spread: float, loss: float):
    """Relations whose items share a baseline level and a loss rate: the true drop is
    E[p_g] * E[l_g] = 0.5 * loss, the items of a relation strongly correlated."""
    p = 0.5 + rng.uniform(-base_spread, base_spread, groups)
    lose = rng.uniform(0, 2 * loss, groups)
    codes = np.repeat(np.arange(groups), size)
    a = rng.random(codes.size) < p[codes]
    b = a & (rng.random(codes.size) >= lose[codes])
    return a.astype(float), b.astype(float), codes


@pytest.mark.integration
def test_cluster_aware_interval_is_wider_and_covers():
    rng = np.random.default_rng(11)
    groups, size, loss = 40, 25, 0.2
    truth = 0.5 * loss
    covered = naive_covered = wider = 0
    reps = 2 * REPS  # coverage near the nominal 95%: twice the draws halve the noise
    for _ in range(reps):
        a, b, codes = _clustered(rng, groups, size, 0.45, loss)
        clustered = paired_drop(a, b, codes)
        naive = paired_drop(a, b)
        covered += clustered.low <= truth <= clustered.high
        naive_covered += naive.low <= truth <= naive.high
        wider += (clustered.high - clustered.low) > (naive.high - naive.low)
    assert clustered.clusters == groups and "clustered" in clustered.method
    assert wider / reps > 0.95
    assert covered / reps >= 0.94, covered
    assert naive_covered / reps < 0.85, naive_covered  # ignoring the clusters under-covers


def test_clustered_score_interval_covers():
    rng = np.random.default_rng(12)
    covered = 0
    for _ in range(REPS):
        a, _, codes = _clustered(rng, 40, 25, 0.45, 0.2)
        e = score_interval(a, codes)
        covered += e.low <= 0.5 <= e.high
    assert covered / REPS >= 0.94, covered


def test_mcnemar_and_paired_interval_match_scipy_on_hand_made_tables():
    # Agresti, Categorical Data Analysis, Table 10.1: approval at two surveys, n = 1600
    both, lost, gained, neither = 794, 150, 86, 570
    a = np.r_[np.ones(both + lost), np.zeros(gained + neither)]
    b = np.r_[np.ones(both), np.zeros(lost), np.ones(gained), np.zeros(neither)]
    table = Table2x2.of(a, b)
    assert (table.both, table.only_first, table.only_second, table.neither) == (794, 150, 86, 570)
    assert mcnemar_exact(table) == pytest.approx(stats.binomtest(150, 236, 0.5).pvalue, rel=1e-12)
    e = paired_drop(a, b)
    assert e.value == pytest.approx(0.04) and e.p_value == mcnemar_exact(table)
    assert (round(e.low, 3), round(e.high, 3)) == (0.021, 0.059)  # the book's (0.021, 0.059)
    # at this size the interval is scipy's paired t interval on the item differences
    ci = stats.ttest_rel(a, b).confidence_interval()
    assert e.low == pytest.approx(ci.low, abs=5e-4) and e.high == pytest.approx(ci.high, abs=5e-4)
    for lost, gained in ((0, 0), (3, 0), (7, 2), (1, 12)):
        table = Table2x2(10, lost, gained, 5)
        expected = 1.0 if lost + gained == 0 else stats.binomtest(lost, lost + gained).pvalue
        assert mcnemar_exact(table) == pytest.approx(expected, rel=1e-12)
    low, high = agresti_min(Table2x2(0, 0, 0, 10))
    assert low < 0 < high  # no item changed: an interval around 0, never a point


def test_holm_and_contrast():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(REPS):  # two independent strata, the contrast's true mean is 0.1
        s1, s2 = rng.normal(0.1, 1, 150), rng.normal(0.1, 2, 300)
        e = contrast([(s1, None), (s2, None)])
        covered += e.low <= 0.1 <= e.high
    assert covered / REPS >= 0.94, covered


def _few_relations(rng, groups: int, size: int = 100):
    """A finding's per-item contrast (lost under compression A minus lost under B) for facts
    in `groups` relations: each relation has its own loss rates (normal around 0.30 and 0.15,
    SD 0.10), so facts of one relation are strongly correlated; the true contrast is
    0.6 * (0.30 - 0.15)."""
    a = np.clip(0.3 + 0.1 * rng.standard_normal(groups), 0, 1)
    b = np.clip(0.15 + 0.1 * rng.standard_normal(groups), 0, 1)
    codes = np.repeat(np.arange(groups), size)
    right = rng.random(codes.size) < 0.6
    lost_a, lost_b = rng.random(codes.size) < a[codes], rng.random(codes.size) < b[codes]
    return right * (lost_a.astype(float) - lost_b), codes


@pytest.mark.parametrize("groups", [(5,), (10,), (5, 8)])
def test_contrast_over_few_relations_covers_with_t_where_z_did_not(groups):
    """With 5-10 relations the normal interval over a clustered SE under-covers; the t on
    Welch-Satterthwaite degrees of freedom (G - 1 for one stratum) covers."""
    rng = np.random.default_rng(sum(groups))
    truth = 0.6 * 0.15
    covered = z_covered = 0
    for _ in range(REPS):
        e = contrast([_few_relations(rng, g) for g in groups])
        covered += e.low <= truth <= e.high
        z_covered += abs(e.value - truth) <= stats.norm.ppf(0.975) * e.se
    assert "t test on" in e.method and e.clusters == sum(groups)
    if len(groups) == 1:
        assert f"on {groups[0] - 1} df" in e.method
    assert covered / REPS >= 0.94, covered
    assert z_covered / REPS < 0.935, z_covered  # the old z interval was too narrow
    assert z_covered < covered


def test_satterthwaite_dof():
    from knowcomp.analysis.intervals import satterthwaite_dof

    assert satterthwaite_dof([1.0], [4]) == pytest.approx(4)
    assert satterthwaite_dof([1.0, 1.0], [4, 4]) == pytest.approx(8)
    assert satterthwaite_dof([1.0, 0.0], [4, 100]) == pytest.approx(4)  # no spread: no weight
    assert 4 < satterthwaite_dof([1.0, 0.2], [4, 100]) < 104


def test_averages_and_recovered_share():
    rng = np.random.default_rng(2)
    a, b = _pairs(rng, 400, 0.6, 0.3, 0.0)
    recovered = np.where(b == 1, 1.0, a * (rng.random(400) < 0.5))  # half the loss back
    share = recovered_share_estimate([Stratum(np.stack([a, b, recovered]))])
    assert not isinstance(share, Undefined)
    assert share.low < 0.5 < share.high and share.low > 0.2
    same = recovered_share_estimate([Stratum(np.stack([a, a, a]))])
    assert isinstance(same, Undefined) and "lost too little" in same.reason
    drop = average_estimate([Stratum(np.stack([a, b])), Stratum(np.stack([a, a]))], (1, -1))
    assert drop.value == pytest.approx(np.mean(a - b) / 2)
    assert drop.low < drop.value < drop.high


def test_power_is_exact_and_matches_simulation():
    plan = items_for_power(0.6, 0.05, 0.15)
    assert plan.power >= 0.8 > exact_power(plan.items - 1, 0.05, 0.15)
    assert abs(plan.items - plan.approximate) / plan.items < 0.15  # near Connor's formula
    rng = np.random.default_rng(9)
    lost, gained = (0.15 + 0.05) / 2, (0.15 - 0.05) / 2
    counts = rng.multinomial(plan.items, [lost, gained, 1 - lost - gained], size=4000)
    b, d = counts[:, 0], counts[:, 0] + counts[:, 1]
    p = np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(b, d, 0.5), stats.binom.sf(b - 1, d, 0.5)))
    assert abs(np.mean(p <= 0.05) - plan.power) < 0.03
    worst = items_for_power(0.6, 0.05)
    assert worst.discordance == pytest.approx(worst_discordance(0.6, 0.05)) == pytest.approx(0.85)
    assert worst.items > 4 * plan.items  # the worst case asks for far more items
    assert more_items(0.02, 0.02, 100) == pytest.approx(100 * (2.8016 / 1) ** 2 - 100, abs=2)
    assert more_items(0.0, 0.02, 100) is None


@pytest.mark.parametrize(
    ("score", "drop", "power", "message"),
    [(0.6, 0.0, 0.8, "positive number"), (0.6, -0.1, 0.8, "positive number"),
     (1.2, 0.1, 0.8, "between 0 and 1"), (0.05, 0.1, 0.8, "larger than the baseline"),
     (0.6, 0.1, 1.5, "power must lie")],
)  # fmt: skip
def test_power_refuses_bad_numbers(score, drop, power, message):
    with pytest.raises(KnowcompError, match=message):
        items_for_power(score, drop, power=power)


def test_item_values_pair_runs_by_item_and_check_the_stored_metric():
    from knowcomp.analysis.items import aligned, item_values

    lama = [
        {"relation": "P1", "uuid": "u1", "rank": 1, "p@1": 1.0, "mrr": 1.0},
        {"relation": "P1", "uuid": "u2", "rank": 4, "p@1": 0.0, "mrr": 0.25},
        {"relation": "P2", "uuid": "u3", "rank": None, "p@1": 0.0},  # not scored: left out
    ]
    base = item_values(lama, "p@1_micro", stored=0.5)
    assert base.keys == (("P1", "u1"), ("P1", "u2")) and base.clusters == ("P1", "P1")
    assert item_values(lama, "p@1_micro", stored=0.4) is None  # another protocol's number
    assert item_values(lama, "mrr_micro").values.tolist() == [1.0, 0.25]
    later = item_values([lama[1], {**lama[0], "rank": 2, "p@1": 0.0}], "p@1_micro")
    pair = aligned([base, later])
    assert pair.rows.tolist() == [[1.0, 0.0], [0.0, 0.0]] and pair.clusters == ("P1", "P1")
    assert pair.keys == (("P1", "u1"), ("P1", "u2"))
    mc = [{"index": 3, "gold": 1, "chosen": 1, "chosen_norm": 0},
          {"index": 5, "gold": 0, "chosen": 1, "chosen_norm": 0}]  # fmt: skip
    assert item_values(mc, "acc").values.tolist() == [1.0, 0.0]
    assert item_values(mc, "acc_norm").values.tolist() == [0.0, 1.0]
    assert item_values(mc, "acc").clusters is None
    assert item_values([], "acc") is None and item_values(mc, "exact_match") is None
    lambada = [{"index": 0, "greedy": True, "loglikelihood": -2.0}]
    assert item_values(lambada, "acc").values.tolist() == [1.0]
    assert item_values(lambada, "loglikelihood").values.tolist() == [-2.0]


def test_the_recovered_share_skips_draws_whose_loss_is_zero():
    """A draw where compression lost nothing and recovery won nothing is 0 / 0: it has no
    share, and once made the whole interval NaN."""
    from knowcomp.analysis.intervals import share_from_draws

    rng = np.random.default_rng(0)
    base = 0.6 + 0.01 * rng.standard_normal(1000)
    compressed = base - 0.2 - 0.01 * rng.standard_normal(1000)
    recovered = compressed + 0.1
    draws = np.stack([base, compressed, recovered], axis=1)
    draws[0] = [0.5, 0.5, 0.5]  # no loss, no gain
    draws[1] = [0.5, 0.5, 0.6]  # no loss, a gain
    with np.errstate(all="raise"):
        low, high = share_from_draws(draws)
    assert np.isfinite([low, high]).all() and low < 0.5 < high
