"""The claims of *Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024), checked on the
recovered trials of a results store, per model, compression and probe kind (`report.verdict`).

1. Knowledge is displaced rather than forgotten: input-side recovery (prompt tuning, IDP) wins
   back much of what compression lost. Checked as the recovered share, (recovered -
   compressed) / (baseline - compressed) on the same items, above `DISPLACED_SHARE` (half),
   with a stratified bootstrap of the share (`analysis.intervals.recovered_share_estimate`'s
   draws) and its two-sided bootstrap p-value against the threshold. A compression whose loss
   is not clearly above zero leaves nothing to recover: that unit is not counted.
2. IDP is at least as good as LoRA, with fewer trainable parameters: IDP's recovered score
   minus LoRA's, on the same items, above minus `NON_INFERIORITY_MARGIN` (one point; a
   non-inferiority test, t on the paired contrast), and IDP's trainable parameters below
   LoRA's (more is a refutation, not a question of noise).
3. Prefix tuning hurts: the compressed model's score minus the prefix-tuned one's, above zero.
4. Quantized models recover more than pruned ones: the recovered share of a quantized
   compression minus that of a pruned one, same recovery method, same model and items, above
   zero (bootstrap of the difference of shares, all five scorings drawn together).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from knowcomp.analysis.intervals import Estimate, draws_p_value
from knowcomp.report.contrasts import Comparison, Term, evaluate
from knowcomp.report.findings import INCONCLUSIVE, Finding, finish, kind_label, probes_by_kind
from knowcomp.report.frame import Frame
from knowcomp.report.stats import Arm, arms
from knowcomp.report.uncertainty import mean_of_draws, percentile_interval
from knowcomp.report.verdict import Check, Unit

HOANG = "Hoang et al. 2024, Do Compressed LLMs Forget Knowledge?"
DISPLACED_SHARE = 0.5  # "much of the drop": at least half of the loss won back
NON_INFERIORITY_MARGIN = 0.01  # IDP may trail LoRA by less than one point and still be "as good"
INPUT_SIDE = ("prompt", "idp")  # recovery that only changes the input: "inference re-direction"


def recovered_arms(frame: Frame) -> dict[tuple[str, str], dict[str, Arm]]:
    """(model, recipe) -> recovery label (`lora`, `idp:prompts=4`) -> the recovered trials as
    one arm: two settings of one method stay apart."""
    out: dict[tuple[str, str], dict[str, Arm]] = defaultdict(dict)
    for p in frame.recovered:
        arm = out[(p.model, p.recipe)].setdefault(
            str(p.method), Arm(p.model, p.recipe, p.compression, intervals=frame.intervals)
        )
        arm.points.append(p)
    return out


def with_method(labelled: dict[str, Arm], method: str) -> list[tuple[str, Arm]]:
    """The (label, arm) pairs recovered with `method` (`lora`, `prompt`, `prefix`, `idp`)."""
    return [(label, arm) for label, arm in labelled.items()
            if str((arm.points[0].recovery or {}).get("method") or label) == method]  # fmt: skip


def check_recovery_claims(frame: Frame) -> list[Finding]:
    recovered = recovered_arms(frame)
    compressed = {(a.model, a.recipe): a for a in arms(frame)}
    return [
        _displaced(frame, recovered, compressed),
        _idp_vs_lora(frame, recovered, compressed),
        _prefix_hurts(frame, recovered, compressed),
        _quant_recovers_more(frame, recovered, compressed),
    ]


def _seeds_and_keys(frame: Frame, trio: Sequence[Arm | None], probe: str) -> list[tuple[str, ...]]:
    """Per seed every arm ran `probe` with, the trial keys of `trio` (None: the baseline)."""
    keys = []
    model = next(a.model for a in trio if a is not None)
    seeds = None
    for arm in trio:
        mine = (
            {b.seed for b in frame.baselines if b.model == model and b.probe == probe}
            if arm is None
            else {p.seed for p in arm.points if p.probe == probe}
        )
        seeds = mine if seeds is None else seeds & mine
    for seed in sorted(seeds or ()):
        found = []
        for arm in trio:
            if arm is None:
                found.append(frame.baseline_keys.get((model, seed, probe)))
            else:
                found.append(
                    next(p.trial_key for p in arm.points if p.seed == seed and p.probe == probe)
                )
        if None not in found:
            keys.append(tuple(found))
    return keys  # type: ignore[return-value]


def _draws(frame: Frame, trio: Sequence[Arm | None], probes: list[str]) -> np.ndarray | None:
    """(R, len(trio)) bootstrap draws of the scores of `trio` averaged over probes and seeds,
    every draw on the items all of them scored (None without per-item records)."""
    parts = [
        frame.intervals.draws(keys, probe)
        for probe in probes
        for keys in _seeds_and_keys(frame, trio, probe)
    ]
    return mean_of_draws(parts) if parts else None


def _point(frame: Frame, trio: Sequence[Arm | None], probes: list[str]) -> np.ndarray | None:
    """The scores of `trio` on their shared items, averaged over probes and seeds."""
    means = []
    for probe in probes:
        for keys in _seeds_and_keys(frame, trio, probe):
            found = frame.intervals.paired(keys, probe)
            if found is None:
                return None
            means.append(found[0].mean(axis=1))
    return np.mean(means, axis=0) if means else None


def _share_check(
    label: str, point: np.ndarray | None, draws: np.ndarray | None, n: int, null: float, of_draws
) -> tuple[Check | None, str | None]:
    """A check of a share-based quantity (`of_draws` turns score rows into it), or why there
    is none: the loss it divides by is not clearly above zero."""
    if point is None or draws is None:
        return Check(label, None, null, scale=100.0, unit="%", settle=False), None
    if any(percentile_interval(loss)[0] <= 0 for loss in _losses(draws)):
        return None, "compression lost too little (its loss's 95% interval reaches zero)"
    with np.errstate(divide="ignore", invalid="ignore"):  # a draw may lose nothing
        value, values = of_draws(point[None, :]), of_draws(draws)
    values = values[~np.isnan(values)]
    low, high = percentile_interval(values)
    estimate = Estimate(
        float(value[0]),
        low,
        high,
        n,
        "stratified bootstrap over probes and seeds",
        se=float(np.std(values, ddof=1)),
    )
    check = Check(
        label, estimate, null, draws_p_value(values, null), scale=100.0, unit="%", settle=False
    )
    return check, None


def _losses(draws: np.ndarray) -> list[np.ndarray]:
    """Baseline minus each compressed column: columns 1, 3, ... (rows: base, compressed,
    recovered[, compressed, recovered])."""
    return [draws[:, 0] - draws[:, i] for i in range(1, draws.shape[1], 2)]


def _share(rows: np.ndarray, at: int = 1) -> np.ndarray:
    return (rows[:, at + 1] - rows[:, at]) / (rows[:, 0] - rows[:, at])


def _items(frame: Frame, trio: Sequence[Arm | None], probes: list[str]) -> int:
    total = 0
    for probe in probes:
        for keys in _seeds_and_keys(frame, trio, probe):
            found = frame.intervals.paired(keys, probe)
            total += 0 if found is None else found[0].shape[1]
    return total


# -- 1 ----------------------------------------------------------------------------------------
def _displaced(frame: Frame, recovered, compressed) -> Finding:
    finding = Finding(
        "H1",
        "Knowledge is displaced rather than forgotten",
        INCONCLUSIVE,
        "",
        paper=HOANG,
        source=(
            f'{HOANG}, abstract: the experiments "strongly endorse the conjecture of '
            "'knowledge displaced' over 'knowledge forgotten'\""
        ),
        definition=(
            f"per model, compression, input-side recovery method ({', '.join(INPUT_SIDE)}) "
            "and probe kind, the recovered share (recovered - compressed) / (baseline - "
            f"compressed) exceeds {DISPLACED_SHARE:.0%}"
        ),
    )
    units = []
    for (model, recipe), methods in recovered.items():
        plain = compressed.get((model, recipe))
        chosen = [pair for m in INPUT_SIDE for pair in with_method(methods, m)]
        for method, arm in chosen if plain is not None else []:
            trio = [None, plain, arm]
            for kind, probes in probes_by_kind([plain, arm]).items():
                unit = Unit(f"{model}, {recipe}, {method}, {kind_label(kind)}", model)
                point, draws = _point(frame, trio, probes), _draws(frame, trio, probes)
                check, why = _share_check(
                    "recovered share",
                    point,
                    draws,
                    _items(frame, trio, probes),
                    DISPLACED_SHARE,
                    _share,
                )
                if check is None:
                    unit.saturated = why
                else:
                    unit.checks.append(check)
                if point is not None:
                    unit.evidence.append(_scores(point, ("baseline", "compressed", method)))
                units.append(unit)
    return finish(
        finding,
        units,
        "recovered trials with prompt or IDP recovery, their compressed trials and a baseline",
    )


def _scores(point: np.ndarray, names: Sequence[str]) -> str:
    return ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(names, point, strict=True))


# -- 2 ----------------------------------------------------------------------------------------
def _trainable(arm: Arm) -> float | None:
    values = [
        float(p.recovery["trainable_params"])
        for p in arm.points
        if p.recovery and p.recovery.get("trainable_params") is not None
    ]
    return sum(values) / len(values) if values else None


def _idp_vs_lora(frame: Frame, recovered, compressed) -> Finding:
    finding = Finding(
        "H2",
        "IDP is at least as good as LoRA, with fewer trainable parameters",
        INCONCLUSIVE,
        "",
        paper=HOANG,
        source=(
            f'{HOANG}, abstract: "compared to the classical re-training alternatives such '
            "as LoRA, prompting with IDP leads to better or comparable post-compression "
            'performance recovery, while saving the extra parameter size"'
        ),
        definition=(
            "per model, compression and probe kind, IDP's recovered score minus "
            f"LoRA's exceeds -{100 * NON_INFERIORITY_MARGIN:.0f} point (non-inferiority, "
            "paired on the same items), and IDP trains fewer parameters than LoRA"
        ),
    )
    units = []
    for (model, recipe), methods in recovered.items():
        pairs = [
            (i, lo) for i in with_method(methods, "idp") for lo in with_method(methods, "lora")
        ]
        for (idp_label, idp), (lora_label, lora) in pairs:
            units += _idp_units(frame, model, recipe, f"{idp_label} vs {lora_label}", idp, lora)
    return finish(finding, units, "recovered trials with both IDP and LoRA on the same compression")


def _idp_units(frame: Frame, model: str, recipe: str, pair: str, idp: Arm,
               lora: Arm) -> list[Unit]:  # fmt: skip
    """One unit per probe kind: IDP's score against LoRA's, and their parameters."""
    units = []
    for kind, probes in probes_by_kind([idp, lora]).items():
        terms: list[Term] = [(idp, 1.0), (lora, -1.0)]
        comparison = Comparison("recovered IDP - recovered LoRA", specs=[(model, probes, terms)])
        unit = Unit(
            f"{model}, {recipe}, {pair}, {kind_label(kind)}",
            model,
            [
                Check(
                    comparison.label,
                    evaluate(frame, comparison),
                    -NON_INFERIORITY_MARGIN,
                    strata=comparison.strata,
                )
            ],
        )
        p_idp, p_lora = _trainable(idp), _trainable(lora)
        if p_idp is not None and p_lora is not None:
            unit.evidence.append(f"trainable parameters: IDP {p_idp:,.0f}, LoRA {p_lora:,.0f}")
            if p_idp >= p_lora:
                unit.refuted = (
                    f"IDP trains {p_idp:,.0f} parameters, not fewer than LoRA's {p_lora:,.0f}"
                )
        else:
            unit.evidence.append("trainable parameters not recorded")
        units.append(unit)
    return units


# -- 3 ----------------------------------------------------------------------------------------
def _prefix_hurts(frame: Frame, recovered, compressed) -> Finding:
    finding = Finding(
        "H3",
        "Prefix tuning hurts the compressed model",
        INCONCLUSIVE,
        "",
        paper=HOANG,
        source=f"{HOANG}, recovery results (paraphrased)",
        definition=(
            "per model, compression and probe kind, the compressed model's score minus "
            "the prefix-tuned one's, on the same items, exceeds zero"
        ),
    )
    units = []
    for (model, recipe), methods in recovered.items():
        plain = compressed.get((model, recipe))
        for label, prefix in with_method(methods, "prefix") if plain is not None else []:
            for kind, probes in probes_by_kind([plain, prefix]).items():
                terms: list[Term] = [(plain, 1.0), (prefix, -1.0)]
                comparison = Comparison("compressed - prefix-tuned", specs=[(model, probes, terms)])
                check = Check(
                    comparison.label, evaluate(frame, comparison), strata=comparison.strata
                )
                units.append(
                    Unit(f"{model}, {recipe}, {label}, {kind_label(kind)}", model, [check])
                )
    return finish(
        finding, units, "recovered trials with prefix tuning, and their compressed trials"
    )


# -- 4 ----------------------------------------------------------------------------------------
def _share_difference(rows: np.ndarray) -> np.ndarray:
    return _share(rows, 1) - _share(rows, 3)


def _quant_recovers_more(frame: Frame, recovered, compressed) -> Finding:
    finding = Finding(
        "H4",
        "Quantized models recover more than pruned ones",
        INCONCLUSIVE,
        "",
        paper=HOANG,
        source=f"{HOANG}, recovery results (paraphrased)",
        definition=(
            "per model, recovery method and probe kind, for every quantized and every "
            "pruned compression recovered with that method, the recovered share of the "
            "quantized one minus that of the pruned one exceeds zero"
        ),
    )
    by_method: dict[tuple[str, str], dict[str, list[tuple[Arm, Arm]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for (model, recipe), methods in recovered.items():
        plain = compressed.get((model, recipe))
        if plain is None or plain.compression.kind not in ("quant", "prune"):
            continue
        for method, arm in methods.items():
            by_method[(model, method)][plain.compression.kind].append((plain, arm))
    units = []
    for (model, method), kinds in by_method.items():
        for quant, quant_rec in kinds.get("quant", []):
            for pruned, pruned_rec in kinds.get("prune", []):
                five = [None, quant, quant_rec, pruned, pruned_rec]
                for kind, probes in probes_by_kind([quant, quant_rec, pruned, pruned_rec]).items():
                    unit = Unit(f"{model}, {method}, {kind_label(kind)}", model)
                    point, draws = _point(frame, five, probes), _draws(frame, five, probes)
                    label = f"share {quant.recipe} - share {pruned.recipe}"
                    check, why = _share_check(
                        label, point, draws, _items(frame, five, probes), 0.0, _share_difference
                    )
                    if check is None:
                        unit.saturated = why
                    else:
                        unit.checks.append(check)
                    if point is not None:
                        unit.evidence.append(
                            _scores(
                                point,
                                ("baseline", quant.recipe, "recovered", pruned.recipe, "recovered"),
                            )
                        )
                    units.append(unit)
    return finish(
        finding,
        units,
        "the same recovery method on both a quantized and a pruned "
        "compression of one model, with a baseline",
    )
