"""A claim's verdict from its units: each model x probe kind tested on its own, Holm over all.

The papers state their findings "for all models", and a LAMA P@1 drop is not the same quantity
as a multiple-choice accuracy drop, so a claim is never checked on an average over models or
over probe kinds. It is split into `Unit`s (one model and one probe kind, sometimes one method
too), each with the `Check`s the claim makes there (a difference of drops, a slope, a recovered
share against a threshold), and `decide` gives:

- each check a two-sided p-value of "the true value is the check's `null`", Holm-adjusted over
  every check of every unit of the claim (the family is the claim);
- each unit `holds` (every check significant above its null), `does not hold` (one significant
  below it, or a condition the claim sets is false, e.g. more trainable parameters), or
  `inconclusive` (otherwise, or no per-item records to test with);
- the claim `holds` only if every unit that can be tested holds, `does not hold` if one unit
  does not hold, `inconclusive` otherwise. A unit where the claim cannot apply (knowledge
  already at the floor: `saturated`; or compression lost nothing to recover) is listed with the
  reason and not counted; a claim with only such units is `saturated`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from knowcomp.analysis.intervals import ALPHA, Estimate, holm, p_value_against
from knowcomp.analysis.power import more_items

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
NO_DATA, SATURATED = "not enough data", "saturated"
NOT_TESTED = (
    "not tested: the results file has no per-item records for every compared "
    "result (written before records were kept?)"
)


@dataclass
class Check:
    """One tested quantity of a unit; the claim wants it above `null` (same units as the
    estimate, before `scale`)."""

    label: str  # e.g. "drop overall - drop attention (mean over levels)"
    estimate: Estimate | None  # None: not testable (no per-item records to pair)
    null: float = 0.0
    p_value: float | None = None  # two-sided, of "value = null"; from the estimate if None
    scale: float = 100.0  # display factor: fractions to points
    unit: str = "points"
    strata: int = 1  # probes behind the estimate, for the items-to-settle note
    settle: bool = True  # whether a power calculation applies (paired contrasts)

    def p(self) -> float | None:
        if self.estimate is None:
            return None
        if self.p_value is not None:
            return self.p_value
        if self.null == 0 and self.estimate.p_value is not None:
            return self.estimate.p_value
        return p_value_against(self.estimate, self.null)


@dataclass
class Unit:
    """One model x probe kind (x method) a claim is checked on."""

    label: str  # e.g. "m1, LAMA probes (P@1), l1_unstructured"
    model: str
    checks: list[Check] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # point values, one line each
    saturated: str | None = None  # why the claim cannot apply here (not counted)
    refuted: str | None = None  # a condition of the claim that is false here
    verdict: str = ""


@dataclass
class Decision:
    verdict: str
    summary: str
    tests: list[str]
    evidence: list[str]


def decide(units: list[Unit]) -> Decision:
    """The claim's verdict, its one-line summary, a line per check, a line per unit."""
    counted = [u for u in units if u.saturated is None]
    tested = [(u, c) for u in counted for c in u.checks if c.p() is not None]
    adjusted = dict(
        zip(map(id, (c for _, c in tested)), holm([c.p() for _, c in tested]), strict=True)
    )  # type: ignore[misc]
    tests: list[str] = []
    for unit in counted:
        unit.verdict = _unit_verdict(unit, adjusted)
        several = len(tested) > 1
        for check in unit.checks:
            p = adjusted.get(id(check))
            tests.append(f"{unit.label}: " + _describe(check, p if several else None))
        if unit.refuted:
            tests.append(f"{unit.label}: {unit.refuted}")
    evidence = [f"{u.label}: {line}" for u in units for line in u.evidence]
    evidence += [f"{u.label}: {SATURATED}: {u.saturated}" for u in units if u.saturated]
    if not counted:
        verdict = SATURATED
    elif any(u.verdict == FAILS for u in counted):
        verdict = FAILS
    elif all(u.verdict == HOLDS for u in counted):
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    return Decision(verdict, _summary(units, counted), tests, evidence)


def _unit_verdict(unit: Unit, adjusted: dict[int, float]) -> str:
    if unit.refuted:
        return FAILS
    if not unit.checks or any(id(c) not in adjusted for c in unit.checks):
        return INCONCLUSIVE
    sides = []
    for check in unit.checks:
        significant = adjusted[id(check)] < ALPHA
        above = check.estimate.value > check.null  # type: ignore[union-attr]
        sides.append(0 if not significant else (1 if above else -1))
    if -1 in sides:
        return FAILS
    return HOLDS if all(s == 1 for s in sides) else INCONCLUSIVE


def _summary(units: list[Unit], counted: list[Unit]) -> str:
    """`Per model and probe kind: holds in 1 of 2 units (1 inconclusive); 1 saturated, not
    counted. By model: m1 holds, m2 inconclusive.`"""
    if not counted:
        return (
            f"All {len(units)} unit(s) are saturated (knowledge already at the floor, or "
            "nothing lost), so the claim cannot be checked on this data."
        )
    tally: dict[str, int] = defaultdict(int)
    for u in counted:
        tally[u.verdict] += 1
    others = [f"{n} {v}" for v, n in tally.items() if v != HOLDS]
    text = (
        f"Per model and probe kind, each tested on its own: holds in {tally[HOLDS]} of "
        f"{len(counted)} unit(s)" + (f" ({', '.join(others)})" if others else "")
    )
    saturated = len(units) - len(counted)
    if saturated:
        text += f"; {saturated} saturated, not counted"
    by_model: dict[str, list[str]] = defaultdict(list)
    for u in counted:
        by_model[u.model].append(u.verdict)
    verdicts = {
        m: (FAILS if FAILS in v else HOLDS if set(v) == {HOLDS} else INCONCLUSIVE)
        for m, v in by_model.items()
    }
    agree = sum(v == HOLDS for v in verdicts.values())
    listed = ", ".join(f"{m} {v}" for m, v in verdicts.items())
    return f"{text}. It holds for {agree} of {len(verdicts)} model(s): {listed}."


def _describe(check: Check, adjusted: float | None) -> str:
    """`drop overall - drop attention = 12.25 points [8.10, 16.40] (method, n item scores):
    p = 1e-06, Holm-adjusted p = 2e-06`; the items that would settle it where not significant."""
    e = check.estimate
    if e is None:
        return f"{check.label}: {NOT_TESTED}"
    shown = e.scaled(check.scale)
    clusters = f"; {e.clusters} clusters" if e.clusters else ""
    against = "" if check.null == 0 else f" against {check.null * check.scale:.4g}"
    p = check.p()
    gap = "" if check.unit.startswith("%") else " "
    text = (
        f"{check.label} = {shown.value:.2f}{gap}{check.unit} [{shown.low:.2f}, "
        f"{shown.high:.2f}] ({e.method}, {e.n} item scores{clusters}): "
        f"p{against} = {p:.2g}"
    )
    if adjusted is not None:
        text += f", Holm-adjusted p = {adjusted:.2g}"
    if (adjusted if adjusted is not None else p) >= ALPHA and check.settle:  # type: ignore[operator]
        text += "; " + _to_settle(check)
    return text


def _to_settle(check: Check) -> str:
    """How many items per probe would give 80% power against a difference of this size."""
    e = check.estimate
    assert e is not None
    per_probe = max(1, round(e.n / max(1, check.strata)))
    extra = more_items(e.value - check.null, e.se or 0.0, per_probe)
    if extra is None:
        return "no difference measured at all, so no number of items can be named"
    return (
        f"about {per_probe + extra:,} items per probe (now {per_probe:,}) would give 80% "
        "power to detect a difference of this size"
    )
