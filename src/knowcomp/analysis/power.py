"""How many items a paired comparison needs: power of McNemar's exact test, sample sizes.

`items_for_power` answers "for a baseline score s and a drop d that matters, how many items
give 80% power?": it starts from Connor's (1987) normal approximation for McNemar's test and
steps to the smallest n whose *exact* power (the discordant count is binomial, and the exact
test's rejection region is computed for each count with scipy) reaches the target. The
discordance (share of items the two models score differently) decides the answer: by default
the worst case the two scores allow, or a rate measured on a pilot run. `more_items` answers
"how many more items would settle this inconclusive comparison?" from its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from knowcomp.analysis.intervals import ALPHA
from knowcomp.errors import KnowcompError

POWER = 0.8
MAX_ITEMS = 10_000_000


def worst_discordance(score: float, drop: float) -> float:
    """The largest share of items two scorings can disagree on when the first scores `score`
    and the second `score - drop`: every item right in one is wrong in the other, as far as
    the two scores allow."""
    lost = min(score, 1 - score + drop)  # P(right before, wrong after) at its largest
    return 2 * lost - drop


def exact_power(n: int, drop: float, discordance: float, alpha: float = ALPHA) -> float:
    """Power of McNemar's exact two-sided test at level `alpha` with n items, a true drop
    `drop` (P(lost) - P(gained)) and discordance P(lost) + P(gained)."""
    lost = (discordance + drop) / 2
    q = lost / discordance  # P(an item that changed was lost)
    counts = np.arange(n + 1)
    # largest k with 2 * P(Bin(D, 1/2) <= k) <= alpha, per discordant count D (-1: none)
    k = stats.binom.ppf(alpha / 2, counts, 0.5).astype(int)
    k = np.where(stats.binom.cdf(k, counts, 0.5) * 2 <= alpha, k, k - 1)
    reject = np.where(
        k >= 0, stats.binom.cdf(k, counts, q) + stats.binom.sf(counts - k - 1, counts, q), 0.0
    )
    return float(np.sum(stats.binom.pmf(counts, n, discordance) * reject))


def connor_items(drop: float, discordance: float, power: float = POWER,
                 alpha: float = ALPHA) -> int:  # fmt: skip
    """Connor's (1987) normal approximation to McNemar's sample size."""
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    root = za * math.sqrt(discordance) + zb * math.sqrt(discordance - drop**2)
    return max(1, math.ceil(root**2 / drop**2))


@dataclass(frozen=True)
class Plan:
    items: int  # the smallest n with the target exact power
    power: float  # the exact power at that n
    approximate: int  # Connor's normal approximation, for reference
    score: float
    drop: float
    discordance: float


def items_for_power(score: float, drop: float, discordance: float | None = None,
                    power: float = POWER, alpha: float = ALPHA) -> Plan:  # fmt: skip
    """Items for `power` to detect `drop` from baseline `score` with McNemar's exact test at
    `alpha`; the discordance is the worst case (`worst_discordance`) when not given."""
    check_plan(score, drop, power)
    worst = worst_discordance(score, drop)
    if discordance is None:
        discordance = worst
    if not drop <= discordance <= worst + 1e-12:
        raise KnowcompError(
            f"a discordance of {discordance:.3f} cannot give a drop of {drop:.3f} from a score of "
            f"{score:.3f}; it must lie between {drop:.3f} and {worst:.3f}"
        )
    guess = connor_items(drop, discordance, power, alpha)
    n = max(1, guess // 2)
    while exact_power(n, drop, discordance, alpha) < power:  # exact power climbs with n,
        n = n + max(1, n // 50)  # saw-toothed; 2% steps find the first n that reaches it
        if n > MAX_ITEMS:
            raise KnowcompError(
                f"more than {MAX_ITEMS:,} items would be needed; plan a larger drop"
            )
    while n > 1 and exact_power(n - 1, drop, discordance, alpha) >= power:
        n -= 1
    return Plan(n, exact_power(n, drop, discordance, alpha), guess, score, drop, discordance)


def check_plan(score: float, drop: float, power: float = POWER) -> None:
    if not 0 < score < 1:
        raise KnowcompError(
            f"the baseline score must lie between 0 and 1 (a fraction); got {score}"
        )
    if not drop > 0:
        raise KnowcompError(f"the drop that matters must be a positive number; got {drop}")
    if drop > score:
        raise KnowcompError(f"a drop of {drop} is larger than the baseline score {score}")
    if not 0 < power < 1:
        raise KnowcompError(f"the power must lie between 0 and 1; got {power}")


def more_items(value: float, se: float, n: int, power: float = POWER,
               alpha: float = ALPHA) -> int | None:  # fmt: skip
    """How many items to add to the n behind an estimate (`value`, standard error `se`) for
    a two-sided test at `alpha` to detect a true difference of `value` with `power`,
    assuming the standard error shrinks as 1/sqrt(items); None where value is 0."""
    if value == 0 or se <= 0:
        return None
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    factor = ((za + zb) * se / abs(value)) ** 2
    return max(0, math.ceil(n * factor) - n)
