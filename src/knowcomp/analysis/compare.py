"""One result against another on the same items: the paired drop of the headline score.

What `knowcomp run`'s end-of-trial lines and `knowcomp recover`'s table print beside each
score: baseline minus trial, item by item (`analysis.items`), with its 95% interval and
p-value (`analysis.intervals.paired_drop`), in points.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from knowcomp.analysis.intervals import Estimate, paired_drop
from knowcomp.analysis.items import aligned, item_values
from knowcomp.probes.categories import headline_name


def _parts(result: Any) -> tuple[Mapping[str, Any], list[dict[str, Any]]]:
    if isinstance(result, Mapping):
        return result.get("metrics") or {}, result.get("records") or []
    return result.metrics, result.records


def headline_drop(baseline: Any, trial: Any) -> Estimate | None:
    """Baseline minus trial (a `ProbeResult` or its dict, with records) in points on the items
    both scored; None without records, or where the two have no headline in common."""
    (base_metrics, base_records), (metrics, records) = _parts(baseline), _parts(trial)
    name = headline_name(metrics)
    if name is None or name != headline_name(base_metrics):
        return None
    runs = [item_values(base_records, name, stored=float(base_metrics[name])),
            item_values(records, name, stored=float(metrics[name]))]  # fmt: skip
    if runs[0] is None or runs[1] is None:
        return None
    pair = aligned(runs)  # type: ignore[arg-type]
    if pair is None:
        return None
    return paired_drop(pair.rows[0], pair.rows[1], pair.clusters).scaled(100)


def describe_drop(drop: Estimate | None) -> str:
    """`drop 4.5 [1.2, 7.8] points, p = 0.008`, or empty."""
    if drop is None:
        return ""
    p = "" if drop.p_value is None else f", p = {drop.p_value:.2g}"
    return f"drop {drop.describe()} points{p}"
