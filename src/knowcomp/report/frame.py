"""The report's data: every result of a store, with its baseline and what the compression was.

A `Frame` holds one `Point` per compressed trial x probe, each joined to its baseline (the
uncompressed run of the same model, seed, item limit, LAMA mode, LAMA protocol and dtype), and
one `BaselinePoint` per baseline x probe. What a trial did (prune, quantize, which group, which
method, which level) is read from the stored compression report's steps, never from the sweep
label, which is free text. Trials with a recover step are kept apart, in `Frame.recovered`: the
tables and plots of the first study show compression alone, and the recovery table puts each
recovered trial beside its compressed trial (same model, recipe and seed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from knowcomp.analysis.intervals import Estimate
from knowcomp.probes.categories import headline_name
from knowcomp.report.uncertainty import Intervals
from knowcomp.store import ResultsStore

STRUCTURED_METHODS = frozenset({"ln_structured", "random_structured"})
PROBE_KINDS = {
    "lama": "LAMA probes (P@1)",
    "mc": "multiple-choice probes (accuracy)",
    "qa": "QA probes (exact match)",
    "other": "other probes",
}
GROUP_LABELS = {"overall": "Overall", "attention": "Att", "feed_forward": "FF"}
GROUP_ORDER = ("overall", "attention", "feed_forward")


def headline_metric(metrics: dict[str, Any], *, choice_metric: str = "acc") -> str | None:
    """The one number a table, plot and finding shows for a probe, as
    `knowcomp.probes.categories.headline_name` defines it for every command."""
    return headline_name(metrics, choice_metric=choice_metric)


def probe_kind(metrics: dict[str, Any]) -> str:
    """`lama`, `mc` (multiple choice: accuracy, mostly with a majority-class baseline), `qa`
    (exact match) or `other` (LAMBADA)."""
    if "p@1_micro" in metrics or "exact_match_micro" in metrics:
        return "lama"
    if "majority" in metrics or "acc_norm" in metrics:  # SciQ has no majority class
        return "mc"
    if "exact_match" in metrics:
        return "qa"
    return "other"


@dataclass(frozen=True)
class Compression:
    """What a trial did, from its compression report's steps."""

    kind: str  # "baseline", "prune", "quant", "prune+quant" (kinds in step order), or "unknown"
    group: str  # the step's group, or the distinct groups in step order joined by " → "
    method: str  # each step's method with its options, e.g. "l1_unstructured+dynamic_int8"
    prune_method: str | None
    level: float | None  # the pruning level (the first pruning step's), None without pruning
    bits: int | None = None  # the quantization step's `bits` option, where it has one

    @property
    def structured(self) -> bool:
        return self.prune_method in STRUCTURED_METHODS

    @property
    def group_label(self) -> str:
        return GROUP_LABELS.get(self.group, self.group)


BASELINE = Compression("baseline", "", "", None, None)


def describe(compression: dict[str, Any] | None, recipe: str | None) -> Compression:
    if recipe is None:
        return BASELINE
    steps = (compression or {}).get("steps") or []
    if not steps:
        return Compression("unknown", "", recipe, None, None)
    kinds: list[str] = []
    groups: list[str] = []
    for step in steps:
        if step.get("kind") not in kinds:
            kinds.append(str(step.get("kind")))
        if step.get("group") not in groups:
            groups.append(str(step.get("group")))
    prunes = [s for s in steps if s.get("kind") == "prune"]
    level = prunes[0].get("level") if prunes else None
    bits = next((s["bits"] for s in steps if s.get("kind") == "quant"
                 and isinstance(s.get("bits"), int)), None)  # fmt: skip
    return Compression(
        kind="+".join(kinds),
        group=" → ".join(groups),
        method="+".join(_method_label(s) for s in steps),
        prune_method=str(prunes[0]["method"]) if prunes else None,
        level=float(level) if isinstance(level, int | float) else None,
        bits=bits,
    )


def _method_label(step: dict[str, Any]) -> str:
    skip = {"kind", "method", "group", "level", "scope", "backend"}
    options = [f"{k}={v}" for k, v in sorted(step.items()) if k not in skip and v is not None]
    return f"{step.get('method')}({', '.join(options)})" if options else str(step.get("method"))


@dataclass(frozen=True)
class BaselinePoint:
    model: str  # the display label: the model name, plus the evaluation setting if several
    seed: int
    probe: str
    kind: str
    metric: str
    value: float
    majority: float | None
    category: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    trial_key: str = ""
    score_ci: Estimate | None = field(default=None, compare=False, repr=False)  # fractions
    # adaptive evaluation (`pipeline.adaptive`): how far the baseline was scored, else None
    sequential: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Point:
    """One compressed trial x probe, with its baseline's score on the same items."""

    model: str
    trial_key: str
    sweep: str
    recipe: str
    seed: int
    probe: str
    kind: str  # probe kind: lama / mc / other
    metric: str
    value: float
    baseline: float | None
    majority: float | None
    compression: Compression
    sparsity: float | None  # achieved, over the compressed layers
    fraction: float | None  # share of the model's parameters the compression changed
    category: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    recovery: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    score_ci: Estimate | None = field(default=None, compare=False, repr=False)  # fractions
    drop_ci: Estimate | None = field(default=None, compare=False, repr=False)  # points
    # adaptive evaluation (`pipeline.adaptive`): items used, why it stopped, its interval
    sequential: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def adaptive(self) -> bool:
        """Whether the drop was measured adaptively (`--precision`): `drop_ci` is then the
        anytime-valid confidence sequence on the items used, and `baseline` the baseline's
        score on those items."""
        return bool(self.sequential and self.sequential.get("drop"))

    @property
    def method(self) -> str | None:
        """The recovery method in short (`lora`, `idp:prompts=4`), None without recovery."""
        if self.recovery is None:
            return None
        return str(self.recovery.get("label") or self.recovery.get("method"))

    @property
    def drop(self) -> float | None:
        """Baseline minus compressed, in percentage points."""
        return None if self.baseline is None else 100 * (self.baseline - self.value)


@dataclass
class Frame:
    baselines: list[BaselinePoint] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    recovered: list[Point] = field(default_factory=list)  # trials with a recover step
    models: list[str] = field(default_factory=list)  # display labels, in store order
    probes: list[str] = field(default_factory=list)  # in the order they first appear
    studies: list[str] = field(default_factory=list)
    versions: dict[str, list[str]] = field(default_factory=dict)  # package -> versions seen
    rows: int = 0
    trial_keys: dict[tuple[str, str, int, str], str] = field(default_factory=dict)
    baseline_keys: dict[tuple[str, int, str], str] = field(default_factory=dict)
    old_input_rule: set[str] = field(default_factory=set)  # trial keys scored before rule 2
    old_lama_ties: set[str] = field(default_factory=set)  # LAMA ranks before scoring version 2
    choice_metric: str = "acc"  # the headline of multiple-choice probes: acc or acc_norm
    intervals: Intervals = field(default_factory=Intervals)  # per-item data, bootstrap draws
    families: dict[str, str] = field(default_factory=dict)  # model label -> its stored family
    # model label -> parameters: "model" (all), "linear", and each group a one-group recipe
    # compressed (that trial's `params_compressed`): the first study's Table 3
    params: dict[str, dict[str, int]] = field(default_factory=dict)


def _setting(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["limit_items"], row["lama_mode"], row["dtype"],
            row.get("lama_protocol") or "templates")  # fmt: skip


def _model_labels(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], str]:
    """Model name, plus the evaluation settings that differ within the store for that model."""
    settings: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        if _setting(row) not in settings[row["model"]]:
            settings[row["model"]].append(_setting(row))
    labels = {}
    for model, seen in settings.items():
        varying = [i for i in range(4) if len({s[i] for s in seen}) > 1]
        for s in seen:
            parts = []
            for i in varying:
                parts.append(
                    ("limit=" if i == 0 else "") + str(s[i] if s[i] is not None else "all")
                )
            labels[(model, *s)] = f"{model} [{', '.join(parts)}]" if parts else model
    return labels


def load_frame(
    store: ResultsStore, *, choice_metric: str = "acc", with_intervals: bool = True
) -> Frame:
    """Read every row of the store into a `Frame`; multiple-choice probes show `choice_metric`
    (`acc`, the studies' number, or `acc_norm`). With `with_intervals`, each result's records
    are read too, for the intervals of its score and of its drop (`report.uncertainty`)."""
    rows = store.rows()
    frame = Frame(rows=len(rows), choice_metric=choice_metric)
    labels = _model_labels(rows)
    base: dict[tuple[str, int, str], tuple[float, float | None]] = {}
    compressed = []
    for row in rows:
        metrics = row["metrics"] or {}
        metric = headline_metric(metrics, choice_metric=choice_metric)
        if metric is None:
            continue
        label = labels[(row["model"], *_setting(row))]
        frame.families.setdefault(label, row.get("family") or "unknown")
        for value, seen in ((label, frame.models), (row["probe"], frame.probes),
                            (row["study"], frame.studies)):  # fmt: skip
            if value not in seen:
                seen.append(value)
        versions = row.get("versions") or {}
        if "knowcomp input rule" not in versions:
            frame.old_input_rule.add(row["trial_key"])
        if row["probe"].startswith("lama") and int(versions.get("knowcomp scoring", 1)) < 2:
            frame.old_lama_ties.add(row["trial_key"])
        for package, version in versions.items():
            known = frame.versions.setdefault(package, [])
            if version not in known:
                known.append(str(version))
        _record_params(frame.params.setdefault(label, {}), row)
        key = row["trial_key"]
        if with_intervals:
            frame.intervals.add(key, row["probe"], store.records(key, row["probe"]), metric,
                                float(metrics[metric]))  # fmt: skip
        if row["recipe"] is None:
            majority = metrics.get("majority")
            sequential = row.get("sequential")
            # a baseline scored as far as its adaptive trials went: its items were chosen by
            # their stopping, so a fixed-sample interval of its score is not shown
            partial = sequential is not None and sequential.get("share", 1) < 1
            score_ci = None if partial else frame.intervals.score(key, row["probe"])
            point = BaselinePoint(label, row["seed"], row["probe"], probe_kind(metrics), metric,
                                  float(metrics[metric]), majority, row["category"], metrics,
                                  key, score_ci, sequential)  # fmt: skip
            frame.baselines.append(point)
            base[(label, row["seed"], row["probe"])] = (point.value, majority)
            frame.baseline_keys[(label, row["seed"], row["probe"])] = row["trial_key"]
        else:
            compressed.append((label, row, metric))
    for label, row, metric in compressed:
        metrics = row["metrics"]
        found = base.get((label, row["seed"], row["probe"]))
        key, probe = row["trial_key"], row["probe"]
        base_key = frame.baseline_keys.get((label, row["seed"], probe))
        if base_key is not None:
            frame.intervals.baseline_of[(key, probe)] = base_key
        drop_ci = frame.intervals.drop(key, probe)
        drop_ci = None if drop_ci is None else drop_ci.scaled(100)
        score_ci = frame.intervals.score(key, probe)
        baseline = found[0] if found else None
        sequential = row.get("sequential")
        adaptive = (sequential or {}).get("drop")
        if adaptive is not None:  # the stored confidence sequence, paired on the items used
            drop_ci = Estimate(adaptive["value"], adaptive["low"], adaptive["high"],
                               adaptive["items"], adaptive["method"])  # fmt: skip
            baseline = float(metrics[metric]) + adaptive["value"] / 100  # on the same items
            score_ci = None  # a fixed-sample interval is not valid where scoring stopped on it
        comp = describe(row["compression"], row["recipe"])
        recovery = row.get("recovery")
        if recovery:  # what the training table needs of the trial row
            recovery = {**recovery, "params_model": row.get("params_model")}
        (frame.recovered if recovery else frame.points).append(
            Point(
                model=label,
                trial_key=row["trial_key"],
                sweep=row["sweep"],
                recipe=row["recipe"],
                seed=row["seed"],
                probe=row["probe"],
                kind=probe_kind(metrics),
                metric=metric,
                value=float(metrics[metric]),
                baseline=baseline,
                majority=found[1] if found else metrics.get("majority"),
                compression=comp,
                sparsity=row["sparsity"],
                fraction=_fraction(row, comp),
                category=row["category"],
                metrics=metrics,
                recovery=recovery or None,
                score_ci=score_ci,
                drop_ci=drop_ci,
                sequential=sequential,
            )
        )
        if not recovery:
            frame.trial_keys[(label, row["recipe"], row["seed"], row["probe"])] = row["trial_key"]
    return frame


def _record_params(found: dict[str, int], row: dict[str, Any]) -> None:
    """The model's parameter counts a stored row tells: all of them, its linear layers', and
    the group of a recipe whose every step compressed one group (its `params_compressed`)."""
    for name, column in (("model", "params_model"), ("linear", "params_linear")):
        if row.get(column) and not row.get("recovery"):
            found.setdefault(name, int(row[column]))
    steps = (row.get("compression") or {}).get("steps") or []
    groups = {str(step.get("group")) for step in steps}
    if len(groups) == 1 and row.get("params_compressed"):
        found.setdefault(groups.pop(), int(row["params_compressed"]))


def _fraction(row: dict[str, Any], comp: Compression) -> float | None:
    """Share of the model's parameters changed: all of the group when it is quantized, only
    the weights the recipe zeroed when it is only pruned (weights already zero before do not
    count; rows written before that was recorded count every zero of the compressed layers)."""
    compressed, total = row.get("params_compressed"), row.get("params_model")
    if not compressed or not total:
        return None
    if comp.kind == "prune":
        counted = ((row.get("compression") or {}).get("compressed") or {}).get("zeros_added")
        if isinstance(counted, int):
            return counted / total
        return (row.get("sparsity") or 0.0) * compressed / total
    return compressed / total
