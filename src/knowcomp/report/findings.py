"""Check the first study's four headline findings against the data in a results store.

*The Cost of Compression* (Namburi et al., 2023) states its findings for all models, and
measures knowledge with LAMA (P@1) and with multiple-choice tasks (accuracy). So each finding
is checked per model and per probe kind (never on an average over models, never averaging a
P@1 drop with an accuracy drop), each such unit tested on its own with a paired contrast of the
compared trials' per-item scores (`report.contrasts`; a t test on Welch-Satterthwaite degrees of
freedom, relation-clustered for LAMA), Holm-adjusted over every comparison of the finding; the
finding holds only where it holds in every unit (`report.verdict`). What each finding compares,
only where the compared compressions exist for the same model at the same levels:

1. Pruning all modules (overall) hurts most: the mean drop of overall pruning over the levels
   all compared groups ran at, against that of attention and of feed-forward pruning, with the
   same pruning method (two comparisons per unit).
2. Knowledge drops fast above 50% sparsity: per pruned group (not the final layer), the slope
   of the drop from 0% to the highest level at or below 50% (the pivot), against the slope from
   the pivot to the first level above 50% where the probe's score reaches its floor (zero for
   LAMA and QA, the majority class or chance for multiple choice), or to the highest level
   above 50% if it never does: levels after the collapse would only flatten the slope. A probe
   already at its floor at the pivot (its score's 95% interval reaches the floor) is
   `saturated`: its knowledge collapsed before 50%, which is no evidence against the claim.
3. Quantizing attention hurts less than quantizing feed-forward: the drop of quantizing only
   attention against only feed-forward, with the same method.
4. Structured final-layer pruning hurts more than unstructured, compared like with like: L1
   structured (`ln_structured` with p = 1) against L1 unstructured (`l1_unstructured`), mean
   drop over the levels both ran at. Random pruning is not part of the claim.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from knowcomp.report.contrasts import Comparison, Term, evaluate
from knowcomp.report.frame import PROBE_KINDS, Frame
from knowcomp.report.stats import Arm, arms
from knowcomp.report.verdict import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NO_DATA,
    SATURATED,
    Check,
    Unit,
    decide,
)

__all__ = [
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "NO_DATA",
    "SATURATED",
    "Finding",
    "check_findings",
    "findings_markdown",
]

NAMBURI = "Namburi et al. 2023, The Cost of Compression"
CHANCE = {"sciq": 0.25}  # multiple-choice probes without a majority class: 1 / choices


@dataclass
class Finding:
    number: int | str
    claim: str
    verdict: str
    summary: str  # one sentence: how many units and models it holds for
    evidence: list[str] = field(default_factory=list)  # one line per unit
    tests: list[str] = field(default_factory=list)  # the test of each comparison, in words
    paper: str = NAMBURI
    source: str = ""  # where the paper states it, and whether `claim` quotes or paraphrases
    definition: str = ""  # what is compared, in one sentence

    def to_markdown(self) -> str:
        lines = [f"### {self.number}. {self.claim}: **{self.verdict}**", ""]
        if self.source:
            lines += [f"*{self.source}*", ""]
        if self.definition:
            lines += [f"Checked as: {self.definition}", ""]
        lines.append(self.summary)
        if self.tests:
            lines += ["", *[f"Test: {t}" for t in self.tests]]
        if self.evidence:
            lines += ["", *[f"- {e}" for e in self.evidence]]
        return "\n".join(lines) + "\n"


def check_findings(frame: Frame) -> list[Finding]:
    """The first study's four findings and its section-level claims
    (`report.namburi_sections`), then the second study's claims (`report.recovery_claims`),
    each with its verdict."""
    from knowcomp.report.recovery_claims import check_recovery_claims

    all_arms = arms(frame)
    checks = (
        _overall_hurts_most,
        _fast_above_half,
        _attention_quant_milder,
        _structured_final_worse,
    )
    from knowcomp.report.namburi_sections import check_sections

    first = [check(frame, all_arms) for check in checks] + check_sections(frame, all_arms)
    return first + check_recovery_claims(frame)


def finish(finding: Finding, units: list[Unit], needs: str) -> Finding:
    """The finding with the verdict of its units, or `not enough data` (with what it needs)."""
    if not units:
        finding.verdict, finding.summary = NO_DATA, f"Not measured here (needs: {needs})."
        return finding
    decision = decide(units)
    finding.verdict, finding.summary = decision.verdict, decision.summary
    finding.tests, finding.evidence = decision.tests, decision.evidence
    return finding


def findings_markdown(findings: list[Finding]) -> str:
    out = [
        "# Findings check\n\nEach claim of *The Cost of Compression* (Namburi et al., 2023) "
        "and *Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024), checked on this "
        "store's data per model and per probe kind (LAMA P@1 drops are never averaged with "
        "accuracy drops), each unit tested, Holm-adjusted over the claim's comparisons. "
        "Drops are baseline minus compressed headline score, in percentage points.\n"
    ]
    for paper in dict.fromkeys(f.paper for f in findings):
        out.append(f"## {paper}\n")
        out += [f.to_markdown() for f in findings if f.paper == paper]
    return "\n".join(out)


def kind_label(kind: str) -> str:
    return PROBE_KINDS.get(kind, kind)


def probes_by_kind(compared: list[Arm]) -> dict[str, list[str]]:
    """The probes every compared arm ran, grouped by probe kind (lama, mc, qa, other)."""
    shared = set(compared[0].probes)
    for arm in compared[1:]:
        shared &= set(arm.probes)
    kinds: dict[str, list[str]] = defaultdict(list)
    for p in compared[0].points:
        if p.probe in shared and p.probe not in kinds[p.kind]:
            kinds[p.kind].append(p.probe)
    return {k: sorted(v) for k, v in kinds.items()}


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


def _pct(level: float) -> str:
    return f"{round(100 * level)}%"


def _check(frame: Frame, comparison: Comparison, null: float = 0.0) -> Check:
    return Check(
        comparison.label,
        evaluate(frame, comparison),
        null,
        scale=comparison.scale,
        unit=comparison.unit,
        strata=comparison.strata,
    )


# -- 1 ----------------------------------------------------------------------------------------
def _overall_hurts_most(frame: Frame, all_arms: list[Arm]) -> Finding:
    finding = Finding(
        1,
        "Pruning all modules (overall) hurts most",
        INCONCLUSIVE,
        "",
        source=f"{NAMBURI}, headline finding (paraphrased)",
        definition="per model, pruning method and probe kind, the mean drop "
        "of pruning every linear layer over the shared levels exceeds that of "
        "pruning attention only and feed-forward only",
    )
    units = []
    for model, lines in _pruned(all_arms).items():
        for method in sorted({m for g, m in lines if g == "overall"}):
            overall = lines[("overall", method)]
            others = {
                g: lines[(g, method)] for g in ("attention", "feed_forward") if (g, method) in lines
            }
            levels = set(overall)
            for by_level in others.values():
                levels &= set(by_level)
            if not others or not levels:
                continue
            chosen = sorted(levels)
            compared = [overall[lv] for lv in chosen]
            compared += [by_level[lv] for by_level in others.values() for lv in chosen]
            for kind, probes in probes_by_kind(compared).items():
                means = {"overall": _mean_drop([overall[lv] for lv in chosen], probes)}
                for group, by_level in others.items():
                    means[group] = _mean_drop([by_level[lv] for lv in chosen], probes)
                if any(v is None for v in means.values()):
                    continue
                unit = Unit(f"{model}, {kind_label(kind)}, {method}", model)
                for group, by_level in others.items():
                    terms: list[Term] = [(by_level[lv], 1 / len(chosen)) for lv in chosen]
                    terms += [(overall[lv], -1 / len(chosen)) for lv in chosen]
                    comparison = Comparison(
                        f"drop overall - drop {group} (mean over levels)",
                        specs=[(model, probes, terms)],
                    )
                    unit.checks.append(_check(frame, comparison))
                unit.evidence.append(
                    f"levels {', '.join(map(_pct, chosen))}; {', '.join(probes)}: mean drop "
                    + ", ".join(f"{g} {_fmt(v)}" for g, v in means.items())  # type: ignore[arg-type]
                )
                units.append(unit)
    return finish(
        finding,
        units,
        "pruning of overall and of attention or feed-forward, with "
        "the same method at the same levels, and a baseline",
    )


# -- 2 ----------------------------------------------------------------------------------------
def floor_of(arm: Arm, probe: str) -> float:
    """The score a probe falls to when the model knows nothing: the majority class (or chance)
    for multiple choice, zero otherwise."""
    point = next(p for p in arm.points if p.probe == probe)
    if point.kind != "mc":
        return 0.0
    return point.majority if point.majority is not None else CHANCE.get(probe, 0.0)


def at_floor(arm: Arm, probe: str) -> bool:
    """Every seed's score of `probe` is at its floor: its 95% interval reaches it (the score
    itself, where it has no interval)."""
    floor = floor_of(arm, probe)
    points = [p for p in arm.points if p.probe == probe]
    return bool(points) and all(
        (p.score_ci.low if p.score_ci is not None else p.value) <= floor + 1e-12 for p in points
    )


def _score_text(arm: Arm, probe: str) -> str:
    cell = arm.score(probe)
    shown = "–" if cell is None else f"{cell.mean:.1f}"
    if cell is not None and cell.has_interval:
        shown += f" [{cell.low:.1f}, {cell.high:.1f}]"
    return f"{shown}, floor {100 * floor_of(arm, probe):.1f}"


def _fast_above_half(frame: Frame, all_arms: list[Arm]) -> Finding:
    finding = Finding(
        2,
        "Knowledge drops fast above 50% sparsity",
        INCONCLUSIVE,
        "",
        source=f"{NAMBURI}, headline finding (paraphrased)",
        definition="per model, pruning method and probe kind, the drop's slope from the highest "
        "level at or below 50% to the first level above it where the score "
        "reaches its floor (else the highest) exceeds its slope from 0% to that "
        "level; probes already at their floor by 50% are saturated",
    )
    units: dict[tuple[str, str, str], Unit] = {}
    slopes: dict[tuple[str, str, str], Comparison] = {}
    for model, lines in _pruned(all_arms).items():
        for (group, method), by_level in lines.items():
            if group == "final_layer":  # the study's claim is about the model's blocks
                continue
            low = [lv for lv in by_level if lv <= 0.5]
            high = sorted(lv for lv in by_level if lv > 0.5)
            if not low or not high:
                continue
            pivot = max(low)
            for kind, probes in probes_by_kind([by_level[pivot], *map(by_level.get, high)]).items():
                key = (model, method, kind)
                label = f"{model}, {kind_label(kind)}, {method}"
                unit = units.setdefault(key, Unit(label, model))
                slope = slopes.setdefault(
                    key,
                    Comparison(
                        "slope above 50% - slope up to 50%", 10.0, "points per 10% sparsity"
                    ),
                )
                saturated = []
                for probe in probes:
                    sweep = f"{group} {probe}"
                    if at_floor(by_level[pivot], probe):
                        saturated.append(
                            f"{sweep} at its floor by {_pct(pivot)} "
                            f"({_score_text(by_level[pivot], probe)})"
                        )
                        continue
                    top = next((lv for lv in high if at_floor(by_level[lv], probe)), high[-1])
                    d_pivot = _mean_drop([by_level[pivot]], [probe])
                    d_top = _mean_drop([by_level[top]], [probe])
                    if d_pivot is None or d_top is None:
                        continue
                    step = 1 / (top - pivot)
                    # slope above - slope below, per unit sparsity, from per-item scores:
                    # (P - T) / (top - pivot) - (B - P) / pivot, B the baseline
                    terms: list[Term] = [
                        (by_level[top], -step),
                        (by_level[pivot], step + 1 / pivot),
                        (None, -1 / pivot),
                    ]
                    slope.specs.append((model, [probe], terms))
                    below = 10 * d_pivot / (100 * pivot)
                    above = 10 * (d_top - d_pivot) / (100 * (top - pivot))
                    unit.evidence.append(
                        f"{sweep}: drop {_fmt(d_pivot)} at {_pct(pivot)}, {_fmt(d_top)} at "
                        f"{_pct(top)}; slope {_fmt(below)} points per 10% up to "
                        f"{_pct(pivot)}, {_fmt(above)} above"
                    )
                if saturated:
                    unit.evidence.append("saturated: " + "; ".join(saturated))
    for key, unit in units.items():
        if slopes[key].specs:
            unit.checks.append(_check(frame, slopes[key]))
        elif any(line.startswith("saturated: ") for line in unit.evidence):
            unit.saturated = "every probe at its floor by 50%, so nothing was left to drop"
    kept = [u for u in units.values() if u.checks or u.saturated]
    return finish(
        finding, kept, "a pruning sweep with levels both at or below and above 50%, and a baseline"
    )


# -- 3 ----------------------------------------------------------------------------------------
def _attention_quant_milder(frame: Frame, all_arms: list[Arm]) -> Finding:
    finding = Finding(
        3,
        "Quantizing attention hurts less than quantizing feed-forward",
        INCONCLUSIVE,
        "",
        source=f"{NAMBURI}, headline finding (paraphrased)",
        definition="per model, quantization method and probe kind, the drop of "
        "quantizing feed-forward only exceeds that of attention only",
    )
    found: dict[tuple[str, str], dict[str, Arm]] = defaultdict(dict)
    for arm in all_arms:
        c = arm.compression
        if c.kind == "quant" and c.group in ("attention", "feed_forward"):
            found[(arm.model, c.method)][c.group] = arm
    units = []
    for (model, method), groups in found.items():
        if len(groups) < 2:
            continue
        for kind, probes in probes_by_kind(list(groups.values())).items():
            att = _mean_drop([groups["attention"]], probes)
            ff = _mean_drop([groups["feed_forward"]], probes)
            if att is None or ff is None:
                continue
            terms: list[Term] = [(groups["attention"], 1.0), (groups["feed_forward"], -1.0)]
            comparison = Comparison(
                "drop feed_forward - drop attention", specs=[(model, probes, terms)]
            )
            seeds = len(groups["attention"].seeds)
            unit = Unit(
                f"{model}, {kind_label(kind)}, {method}", model, [_check(frame, comparison)]
            )
            unit.evidence.append(
                f"{', '.join(probes)} ({seeds} seed(s)): drop attention "
                f"{_fmt(att)}, feed_forward {_fmt(ff)}"
            )
            units.append(unit)
    return finish(
        finding,
        units,
        "quantization of attention only and of feed-forward only, "
        "with the same method, and a baseline",
    )


# -- 4 ----------------------------------------------------------------------------------------
def is_l1(arm: Arm) -> bool:
    """L1 magnitude pruning: `l1_unstructured`, or `ln_structured` on the L1 norm (p = 1)."""
    c = arm.compression
    if c.prune_method == "l1_unstructured":
        return True
    if c.prune_method != "ln_structured":
        return False
    found = re.search(r"\bp=([^,)]+)", c.method)
    return found is None or float(found.group(1)) == 1.0


def _structured_final_worse(frame: Frame, all_arms: list[Arm]) -> Finding:
    finding = Finding(
        4,
        "Structured final-layer pruning hurts more than unstructured",
        INCONCLUSIVE,
        "",
        source=f"{NAMBURI}, headline finding (paraphrased)",
        definition="per model and probe kind, the mean drop of L1 structured "
        "pruning of the final layer (ln_structured, p = 1) over the levels both "
        "ran at exceeds that of L1 unstructured pruning (l1_unstructured); random "
        "pruning is not compared with L1",
    )
    units = []
    for model, lines in _pruned(all_arms).items():
        finals = {m: v for (g, m), v in lines.items() if g == "final_layer"}
        l1 = {m: v for m, v in finals.items() if is_l1(next(iter(v.values())))}
        structured = {m: v for m, v in l1.items() if next(iter(v.values())).compression.structured}
        unstructured = {m: v for m, v in l1.items() if m not in structured}
        for s_method, s_levels in sorted(structured.items()):
            for u_method, u_levels in sorted(unstructured.items()):
                levels = sorted(set(s_levels) & set(u_levels))
                if not levels:
                    continue
                s_arms = [s_levels[lv] for lv in levels]
                u_arms = [u_levels[lv] for lv in levels]
                for kind, probes in probes_by_kind(s_arms + u_arms).items():
                    s_drop, u_drop = _mean_drop(s_arms, probes), _mean_drop(u_arms, probes)
                    if s_drop is None or u_drop is None:
                        continue
                    terms: list[Term] = [(a, 1 / len(levels)) for a in u_arms]
                    terms += [(a, -1 / len(levels)) for a in s_arms]
                    comparison = Comparison(
                        "drop structured - drop unstructured (mean over levels)",
                        specs=[(model, probes, terms)],
                    )
                    unit = Unit(f"{model}, {kind_label(kind)}", model, [_check(frame, comparison)])
                    unit.evidence.append(
                        f"levels {', '.join(map(_pct, levels))}; {', '.join(probes)}: mean drop "
                        f"structured {s_method} {_fmt(s_drop)}, unstructured {u_method} "
                        f"{_fmt(u_drop)}"
                    )
                    units.append(unit)
    return finish(
        finding,
        units,
        "the final layer pruned with L1 both structured "
        "(ln_structured, p=1) and unstructured (l1_unstructured) at the same levels, "
        "and a baseline",
    )
