"""Check the study's four headline findings against the data in a results store.

Each check compares averaged drops (baseline minus compressed, in percentage points, averaged
over the probes the compared compressions share, then over seeds), only where the compared
compressions exist for the same model at the same levels, and pools the models by averaging:

1. Pruning all modules (overall) hurts most: the mean drop of overall pruning against that of
   attention and of feed-forward pruning, over the levels all of them ran at.
2. Knowledge drops fast above 50% sparsity: per model and pruned group, the slope of the drop
   from 0% to the highest level at or below 50%, against the slope from there to the highest
   level above 50%.
3. Quantizing attention hurts less than quantizing feed-forward: the drop of quantizing only
   attention against only feed-forward, with the same method.
4. Structured final-layer pruning hurts more than unstructured: the mean drop over the levels
   both ran at.

Each finding is also tested (`report.contrasts`): the compared difference of drops is a paired
contrast of the compared trials' per-item scores on the same items, pooled over probes and
models, with its 95% interval and a z test (relation-clustered for LAMA). Finding 1 makes two
comparisons (overall against attention, and against feed-forward), so its p-values are
Holm-adjusted. The verdict is "holds" (every comparison significant at 5% in the claimed
direction), "does not hold" (one significant against it), "inconclusive" (with the interval
and the items per probe a power calculation says would settle it at 80% power; also where the
results file has no per-item records to test with), or "not enough data" (with what is
missing).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from knowcomp.analysis.intervals import ALPHA, Estimate, holm
from knowcomp.analysis.power import more_items
from knowcomp.report.contrasts import Comparison, evaluate
from knowcomp.report.frame import Frame
from knowcomp.report.stats import Arm, arms

HOLDS, FAILS, NO_DATA = "holds", "does not hold", "not enough data"
INCONCLUSIVE = "inconclusive"


@dataclass
class Finding:
    number: int
    claim: str
    verdict: str
    summary: str  # one sentence with the pooled numbers
    evidence: list[str] = field(default_factory=list)  # one line per model / comparison
    tests: list[str] = field(default_factory=list)  # the test of each comparison, in words

    def to_markdown(self) -> str:
        lines = [f"### {self.number}. {self.claim}: **{self.verdict}**", "", self.summary]
        if self.tests:
            lines += ["", *[f"Test: {t}" for t in self.tests]]
        if self.evidence:
            lines += ["", *[f"- {e}" for e in self.evidence]]
        return "\n".join(lines) + "\n"


Checked = tuple[Finding, list[Comparison]]  # a finding's point verdict and what to test


def check_findings(frame: Frame) -> list[Finding]:
    all_arms = arms(frame)
    checks = (_overall_hurts_most, _fast_above_half, _attention_quant_milder,
              _structured_final_worse)  # fmt: skip
    return [_tested(frame, *check(all_arms)) for check in checks]


def _tested(frame: Frame, finding: Finding, comparisons: list[Comparison]) -> Finding:
    """The finding with its verdict from the tests of its comparisons (see the module doc)."""
    if finding.verdict == NO_DATA:
        return finding
    found = [(c, evaluate(frame, c)) for c in comparisons]
    if not found or any(e is None for _, e in found):
        finding.verdict = INCONCLUSIVE
        finding.tests = ["not tested: the results file has no per-item records for every "
                         "compared result (written before records were kept?)"]  # fmt: skip
        return finding
    estimates: list[Estimate] = [e for _, e in found]  # type: ignore[misc]
    adjusted = holm([e.p_value or 0.0 for e in estimates])
    significant = [p < ALPHA for p in adjusted]
    if any(sig and e.value < 0 for sig, e in zip(significant, estimates, strict=True)):
        finding.verdict = FAILS
    elif all(sig and e.value > 0 for sig, e in zip(significant, estimates, strict=True)):
        finding.verdict = HOLDS
    else:
        finding.verdict = INCONCLUSIVE
    several = len(found) > 1
    for (comparison, e), p, sig in zip(found, adjusted, significant, strict=True):
        text = _describe(comparison, e, p if several else None)  # type: ignore[arg-type]
        if not sig:
            text += "; " + _to_settle(e, comparison)  # type: ignore[arg-type]
        finding.tests.append(text)
    return finding


def _describe(comparison: Comparison, e: Estimate, adjusted: float | None) -> str:
    """`drop overall - drop attention = 12.25 points [8.10, 16.40] (method, n item scores):
    p = 1e-06`, with the Holm-adjusted p where the finding makes several comparisons."""
    shown = e.scaled(comparison.scale)
    clusters = f"; {e.clusters} clusters" if e.clusters else ""
    text = (f"{comparison.label} = {shown.value:.2f} {comparison.unit} [{shown.low:.2f}, "
            f"{shown.high:.2f}] ({e.method}, {e.n} item scores{clusters}): "
            f"p = {e.p_value:.2g}")  # fmt: skip
    if adjusted is not None:
        text += f", Holm-adjusted p = {adjusted:.2g}"
    return text


def _to_settle(e: Estimate, comparison: Comparison) -> str:
    """How many items per probe would give 80% power against a difference of this size."""
    per_probe = max(1, round(e.n / max(1, comparison.strata)))
    extra = more_items(e.value, e.se or 0.0, per_probe)
    if extra is None:
        return "no difference measured at all, so no number of items can be named"
    return (
        f"about {per_probe + extra:,} items per probe (now {per_probe:,}) would give 80% "
        "power to detect a difference of this size"
    )


def findings_markdown(findings: list[Finding]) -> str:
    head = ("# Findings check\n\nThe four headline findings of *The Cost of Compression* "
            "(Namburi et al., 2023), checked on this store's data. Drops are baseline minus "
            "compressed headline score, in percentage points, averaged over the probes the "
            "compared compressions share and over seeds.\n")  # fmt: skip
    return head + "\n" + "\n".join(f.to_markdown() for f in findings)


def _shared_probes(compared: list[Arm]) -> list[str]:
    shared = set(compared[0].probes)
    for arm in compared[1:]:
        shared &= set(arm.probes)
    return sorted(shared)


def _mean_drop(compared: list[Arm], probes: list[str]) -> float | None:
    drops = [arm.drop(probes) for arm in compared]
    if not probes or any(d is None for d in drops):
        return None
    return statistics.fmean(d.mean for d in drops)  # type: ignore[union-attr]


def _pruned(all_arms: list[Arm]) -> dict[str, dict[tuple[str, str], dict[float, Arm]]]:
    """model -> (group, method) -> level -> arm, for pruning-only arms."""
    out: dict[str, dict[tuple[str, str], dict[float, Arm]]] = defaultdict(lambda: defaultdict(dict))
    for arm in all_arms:
        c = arm.compression
        if c.kind == "prune" and c.level is not None:
            out[arm.model][(c.group, c.method)][round(c.level, 6)] = arm
    return out


def _fmt(x: float) -> str:
    return f"{x:.2f}"


# -- 1 ----------------------------------------------------------------------------------------
def _overall_hurts_most(all_arms: list[Arm]) -> Checked:
    claim = "Pruning all modules (overall) hurts most"
    pooled: dict[str, list[float]] = defaultdict(list)
    comparisons: dict[str, Comparison] = {}
    evidence = []
    for model, lines in _pruned(all_arms).items():
        methods = {m for g, m in lines if g == "overall"}
        for method in sorted(methods):
            overall = lines[("overall", method)]
            others = {g: lines[(g, method)] for g in ("attention", "feed_forward")
                      if (g, method) in lines}  # fmt: skip
            levels = set(overall)
            for by_level in others.values():
                levels &= set(by_level)
            if not others or not levels:
                continue
            compared = [overall[lv] for lv in levels]
            compared += [by_level[lv] for by_level in others.values() for lv in levels]
            probes = _shared_probes(compared)
            means = {"overall": _mean_drop([overall[lv] for lv in sorted(levels)], probes)}
            for group, by_level in others.items():
                means[group] = _mean_drop([by_level[lv] for lv in sorted(levels)], probes)
            if any(v is None for v in means.values()):
                continue
            for group, value in means.items():
                pooled[group].append(value)  # type: ignore[arg-type]
            chosen = sorted(levels)
            for group, by_level in others.items():
                terms = [(by_level[lv], 1 / len(chosen)) for lv in chosen]
                terms += [(overall[lv], -1 / len(chosen)) for lv in chosen]
                comparison = comparisons.setdefault(
                    group, Comparison(f"drop overall - drop {group} (mean over levels)")
                )
                comparison.specs.append((model, probes, terms))  # type: ignore[arg-type]
            levels_text = ", ".join(f"{round(100 * lv)}%" for lv in sorted(levels))
            evidence.append(
                f"{model} ({method}, levels {levels_text}; {len(probes)} probes): mean drop "
                + ", ".join(f"{g} {_fmt(v)}" for g, v in means.items())  # type: ignore[arg-type]
            )
    if not pooled:
        return Finding(1, claim, NO_DATA, "Needs pruning of overall and of attention or "
                       "feed-forward, at the same levels, with a baseline."), []  # fmt: skip
    means = {g: statistics.fmean(v) for g, v in pooled.items()}
    others = {g: v for g, v in means.items() if g != "overall"}
    holds = all(means["overall"] > v for v in others.values())
    summary = (
        f"Mean drop over the shared levels: overall {_fmt(means['overall'])} points, "
        + ", ".join(f"{g} {_fmt(v)}" for g, v in others.items())
        + (" — overall is the largest." if holds else " — overall is not the largest.")
    )
    return Finding(1, claim, HOLDS if holds else FAILS, summary, evidence), list(
        comparisons.values()
    )


# -- 2 ----------------------------------------------------------------------------------------
def _fast_above_half(all_arms: list[Arm]) -> Checked:
    claim = "Knowledge drops fast above 50% sparsity"
    below_slopes, above_slopes, evidence = [], [], []
    slopes = Comparison("slope above 50% - slope up to 50%", 10.0, "points per 10% sparsity")
    for model, lines in _pruned(all_arms).items():
        for (group, method), by_level in lines.items():
            if group == "final_layer":  # the study's claim is about the model's blocks
                continue
            low = [lv for lv in by_level if lv <= 0.5]
            high = [lv for lv in by_level if lv > 0.5]
            if not low or not high:
                continue
            pivot, top = max(low), max(high)
            probes = _shared_probes([by_level[pivot], by_level[top]])
            d_pivot = _mean_drop([by_level[pivot]], probes)
            d_top = _mean_drop([by_level[top]], probes)
            if d_pivot is None or d_top is None:
                continue
            below = d_pivot / (100 * pivot)  # from no drop at 0% sparsity
            above = (d_top - d_pivot) / (100 * (top - pivot))
            below_slopes.append(below)
            above_slopes.append(above)
            # slope above - slope below, per unit sparsity, from per-item scores:
            # (P - T) / (top - pivot) - (B - P) / pivot, B the baseline
            step = 1 / (top - pivot)
            terms = [(by_level[top], -step), (by_level[pivot], step + 1 / pivot),
                     (None, -1 / pivot)]  # fmt: skip
            slopes.specs.append((model, probes, terms))
            evidence.append(
                f"{model} {group} ({method}): drop {_fmt(d_pivot)} at {round(100 * pivot)}%, "
                f"{_fmt(d_top)} at {round(100 * top)}%; slope {_fmt(10 * below)} points per 10% "
                f"up to {round(100 * pivot)}%, {_fmt(10 * above)} above"
            )
    if not below_slopes:
        return Finding(2, claim, NO_DATA, "Needs a pruning sweep with levels both at or below "
                       "and above 50%, with a baseline."), []  # fmt: skip
    below, above = statistics.fmean(below_slopes), statistics.fmean(above_slopes)
    holds = above > below
    summary = (
        f"Mean slope of the drop: {_fmt(10 * below)} points per 10% sparsity up to 50%, "
        f"{_fmt(10 * above)} above 50% over {len(below_slopes)} sweep(s) — "
        + ("steeper above 50%." if holds else "not steeper above 50%.")
    )
    return Finding(2, claim, HOLDS if holds else FAILS, summary, evidence), [slopes]


# -- 3 ----------------------------------------------------------------------------------------
def _attention_quant_milder(all_arms: list[Arm]) -> Checked:
    claim = "Quantizing attention hurts less than quantizing feed-forward"
    quant = Comparison("drop feed_forward - drop attention")
    found: dict[tuple[str, str], dict[str, Arm]] = defaultdict(dict)
    for arm in all_arms:
        c = arm.compression
        if c.kind == "quant" and c.group in ("attention", "feed_forward"):
            found[(arm.model, c.method)][c.group] = arm
    pooled: dict[str, list[float]] = defaultdict(list)
    evidence = []
    for (model, method), groups in found.items():
        if len(groups) < 2:
            continue
        probes = _shared_probes(list(groups.values()))
        att = _mean_drop([groups["attention"]], probes)
        ff = _mean_drop([groups["feed_forward"]], probes)
        if att is None or ff is None:
            continue
        pooled["attention"].append(att)
        pooled["feed_forward"].append(ff)
        terms = [(groups["attention"], 1.0), (groups["feed_forward"], -1.0)]
        quant.specs.append((model, probes, terms))  # type: ignore[arg-type]
        seeds = len(groups["attention"].seeds)
        evidence.append(f"{model} ({method}; {len(probes)} probes, {seeds} seed(s)): drop "
                        f"attention {_fmt(att)}, feed_forward {_fmt(ff)}")  # fmt: skip
    if not pooled:
        return Finding(3, claim, NO_DATA, "Needs quantization of attention only and of "
                       "feed-forward only, with the same method, and a baseline."), []  # fmt: skip
    att, ff = statistics.fmean(pooled["attention"]), statistics.fmean(pooled["feed_forward"])
    holds = att < ff
    summary = f"Mean drop: attention {_fmt(att)} points, feed-forward {_fmt(ff)} — " + (
        "attention hurts less." if holds else "attention does not hurt less."
    )
    return Finding(3, claim, HOLDS if holds else FAILS, summary, evidence), [quant]


# -- 4 ----------------------------------------------------------------------------------------
def _structured_final_worse(all_arms: list[Arm]) -> Checked:
    claim = "Structured final-layer pruning hurts more than unstructured"
    final = Comparison("drop structured - drop unstructured (mean over levels)")
    pooled: dict[str, list[float]] = defaultdict(list)
    evidence = []
    for model, lines in _pruned(all_arms).items():
        finals = {m: by_level for (g, m), by_level in lines.items() if g == "final_layer"}
        structured = {m: v for m, v in finals.items() if v[next(iter(v))].compression.structured}
        unstructured = {m: v for m, v in finals.items() if m not in structured}
        for s_method, s_levels in sorted(structured.items()):
            for u_method, u_levels in sorted(unstructured.items()):
                levels = sorted(set(s_levels) & set(u_levels))
                if not levels:
                    continue
                s_arms = [s_levels[lv] for lv in levels]
                u_arms = [u_levels[lv] for lv in levels]
                probes = _shared_probes(s_arms + u_arms)
                s_drop, u_drop = _mean_drop(s_arms, probes), _mean_drop(u_arms, probes)
                if s_drop is None or u_drop is None:
                    continue
                pooled["structured"].append(s_drop)
                pooled["unstructured"].append(u_drop)
                terms = [(a, 1 / len(levels)) for a in u_arms]
                terms += [(a, -1 / len(levels)) for a in s_arms]
                final.specs.append((model, probes, terms))  # type: ignore[arg-type]
                levels_text = ", ".join(f"{round(100 * lv)}%" for lv in levels)
                evidence.append(
                    f"{model} (levels {levels_text}; {len(probes)} probes): mean drop structured "
                    f"{s_method} {_fmt(s_drop)}, unstructured {u_method} {_fmt(u_drop)}"
                )
    if not pooled:
        return Finding(4, claim, NO_DATA, "Needs the final layer pruned both structured and "
                       "unstructured at the same levels, with a baseline."), []  # fmt: skip
    s, u = statistics.fmean(pooled["structured"]), statistics.fmean(pooled["unstructured"])
    holds = s > u
    summary = (f"Mean drop over the shared levels: structured {_fmt(s)} points, unstructured "
               f"{_fmt(u)} — " + ("structured hurts more." if holds else
                                  "structured does not hurt more."))  # fmt: skip
    return Finding(4, claim, HOLDS if holds else FAILS, summary, evidence), [final]
