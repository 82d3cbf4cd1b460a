"""*The Cost of Compression* (Namburi et al., 2023): observations of its results sections,
beyond its four headline findings (`report.findings`), checked the same way: per model and
probe kind (and method), each unit a paired contrast of the compared trials' per-item scores
(`report.contrasts`), Holm-adjusted over every comparison of the claim (`report.verdict`).

The paper's text was not at hand when these were written: the claims are knowcomp's reading of
the sections on global pruning (Figs. 3-5) and on prune-then-quantize (GPQ, Fig. 7, Tables 4-6),
paraphrased, and the docs say so (`docs/findings.md`).

- S1. Pruning feed-forward costs more knowledge than pruning attention: the mean drop of
  pruning `feed_forward` over the levels both groups ran at, minus that of `attention`, same
  pruning method, > 0.
- S2. Pruning before quantizing costs more than quantizing alone: for every GPQ trial, its drop
  minus the drop of quantizing the same group with the same quantization method alone (GQ),
  > 0.
- S3. The more is pruned before quantizing, the more is lost: for consecutive GPQ pruning
  levels of one group and methods (20% and 40% in the study), the drop at the higher level
  minus that at the lower, > 0.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

from knowcomp.report.contrasts import Comparison, Term
from knowcomp.report.findings import (
    NAMBURI,
    Finding,
    _check,
    _fmt,
    _mean_drop,
    _pct,
    _pruned,
    finish,
    kind_label,
    probes_by_kind,
)
from knowcomp.report.frame import Frame
from knowcomp.report.stats import Arm
from knowcomp.report.verdict import INCONCLUSIVE, Unit

SECTION = f"{NAMBURI}, results sections (paraphrased; knowcomp's reading of the paper)"


def check_sections(frame: Frame, all_arms: list[Arm]) -> list[Finding]:
    """S1-S3, each with its verdict."""
    return [_ff_pruning_worse(frame, all_arms), _gpq_worse_than_gq(frame, all_arms),
            _gpq_grows_with_level(frame, all_arms)]  # fmt: skip


def _difference(frame: Frame, label: str, model: str, probes: list[str], worse: list[Arm],
                better: list[Arm]) -> Comparison:  # fmt: skip
    """Mean drop of `worse` minus mean drop of `better` (each averaged over its arms)."""
    terms: list[Term] = [(a, 1 / len(better)) for a in better]
    terms += [(a, -1 / len(worse)) for a in worse]
    return Comparison(label, specs=[(model, probes, terms)])


# -- S1 ---------------------------------------------------------------------------------------
def _ff_pruning_worse(frame: Frame, all_arms: list[Arm]) -> Finding:
    finding = Finding(
        "S1", "Pruning feed-forward costs more knowledge than pruning attention", INCONCLUSIVE,
        "", source=SECTION,
        definition="per model, pruning method and probe kind, the mean drop of pruning "
        "feed-forward only over the levels both groups ran at exceeds that of attention only",
    )  # fmt: skip
    units = []
    for model, lines in _pruned(all_arms).items():
        for method in sorted({m for g, m in lines if g == "feed_forward"}):
            ff, att = lines.get(("feed_forward", method)), lines.get(("attention", method))
            levels = sorted(set(ff or ()) & set(att or ()))
            if not levels:
                continue
            worse, better = [ff[lv] for lv in levels], [att[lv] for lv in levels]  # type: ignore[index]
            for kind, probes in probes_by_kind(worse + better).items():
                d_ff, d_att = _mean_drop(worse, probes), _mean_drop(better, probes)
                if d_ff is None or d_att is None:
                    continue
                comparison = _difference(frame, "drop feed_forward - drop attention (mean over "
                                         "levels)", model, probes, worse, better)  # fmt: skip
                unit = Unit(f"{model}, {kind_label(kind)}, {method}", model,
                            [_check(frame, comparison)])  # fmt: skip
                unit.evidence.append(f"levels {', '.join(map(_pct, levels))}; "
                                     f"{', '.join(probes)}: mean drop feed_forward {_fmt(d_ff)}, "
                                     f"attention {_fmt(d_att)}")  # fmt: skip
                units.append(unit)
    return finish(finding, units, "pruning of attention and of feed-forward with the same "
                  "method at the same levels, and a baseline")  # fmt: skip


# -- S2 and S3: prune-then-quantize ------------------------------------------------------------
def _quant_part(arm: Arm) -> tuple[str, str]:
    """(group, method) of the quantization step: the last of a GPQ recipe's groups and steps."""
    c = arm.compression
    return c.group.split(" → ")[-1], c.method.split("+")[-1]


def _gpq(all_arms: list[Arm]) -> dict[str, dict[tuple[str, str, str], dict[float, Arm]]]:
    """model -> (quantized group, quantization method, pruning method) -> level -> arm."""
    out: dict[str, dict[tuple[str, str, str], dict[float, Arm]]] = defaultdict(dict)
    for arm in all_arms:
        c = arm.compression
        if c.kind == "prune+quant" and c.level is not None:
            group, method = _quant_part(arm)
            prune = c.method.split("+")[0]
            out[arm.model].setdefault((group, method, prune), {})[round(c.level, 6)] = arm
    return out


def _add(units: dict[tuple[str, str, str], Unit], frame: Frame, key: tuple[str, str, str],
         probes: list[str], label: str, worse: list[Arm], better: list[Arm],
         evidence: str) -> None:  # fmt: skip
    """One check (`worse` drops more than `better`) and its evidence line, in the unit of
    `key` = (model, method, probe kind)."""
    model, method, kind = key
    unit = units.setdefault(key, Unit(f"{model}, {kind_label(kind)}, {method}", model))
    unit.checks.append(_check(frame, _difference(frame, label, model, probes, worse, better)))
    unit.evidence.append(evidence)


def _gpq_worse_than_gq(frame: Frame, all_arms: list[Arm]) -> Finding:
    finding = Finding(
        "S2", "Pruning before quantizing costs more than quantizing alone", INCONCLUSIVE, "",
        source=SECTION,
        definition="per model, quantization method and probe kind, every prune-then-quantize "
        "trial's drop exceeds the drop of quantizing the same group alone with the same method",
    )  # fmt: skip
    gq = {(a.model, *_quant_part(a)): a for a in all_arms if a.compression.kind == "quant"}
    units: dict[tuple[str, str, str], Unit] = {}
    for model, lines in _gpq(all_arms).items():
        for (group, method, prune), by_level in lines.items():
            alone = gq.get((model, group, method))
            if alone is None:
                continue
            for level, arm in sorted(by_level.items()):
                for kind, probes in probes_by_kind([arm, alone]).items():
                    d_gpq, d_gq = _mean_drop([arm], probes), _mean_drop([alone], probes)
                    if d_gpq is None or d_gq is None:
                        continue
                    label = f"drop GPQ {_pct(level)} {group} ({prune}) - drop GQ {group}"
                    _add(units, frame, (model, method, kind), probes, label, [arm], [alone],
                         f"{group}, {', '.join(probes)}: drop GQ {_fmt(d_gq)}, GPQ "
                         f"{_pct(level)} {_fmt(d_gpq)}")  # fmt: skip
    return finish(finding, list(units.values()), "prune-then-quantize trials and the same "
                  "group quantized alone with the same method, and a baseline")  # fmt: skip


def _gpq_grows_with_level(frame: Frame, all_arms: list[Arm]) -> Finding:
    finding = Finding(
        "S3", "The more is pruned before quantizing, the more knowledge is lost", INCONCLUSIVE,
        "", source=SECTION,
        definition="per model, quantization method and probe kind, for consecutive pruning "
        "levels of prune-then-quantize (one group, the same methods), the drop at the higher "
        "level exceeds the drop at the lower",
    )  # fmt: skip
    units: dict[tuple[str, str, str], Unit] = {}
    for model, lines in _gpq(all_arms).items():
        for (group, method, prune), by_level in lines.items():
            levels = sorted(by_level)
            for low, high in pairwise(levels):
                pair = [by_level[low], by_level[high]]
                for kind, probes in probes_by_kind(pair).items():
                    d_low, d_high = _mean_drop(pair[:1], probes), _mean_drop(pair[1:], probes)
                    if d_low is None or d_high is None:
                        continue
                    label = f"drop GPQ {_pct(high)} - drop GPQ {_pct(low)} {group} ({prune})"
                    _add(units, frame, (model, method, kind), probes, label, pair[1:], pair[:1],
                         f"{group}, {', '.join(probes)}: drop GPQ {_pct(low)} {_fmt(d_low)}, "
                         f"{_pct(high)} {_fmt(d_high)}")  # fmt: skip
    return finish(finding, list(units.values()), "prune-then-quantize of one group at two or "
                  "more pruning levels, and a baseline")  # fmt: skip
