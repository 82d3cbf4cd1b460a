"""One result against another on the same items: the paired drop of the headline score.

What `knowcomp run`'s end-of-trial lines and `knowcomp recover`'s table print beside each
score: baseline minus trial, item by item (`analysis.items`), with its 95% interval and
p-value (`analysis.intervals.paired_drop`), in points. Also the stage table of a recovery run
(`stage_rows`: each probe's headline and the category averages per stage) and the recovered
share's intervals (`share_intervals`).
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


def stage_rows(stages: dict[str, list]) -> list[tuple[str, list[float | None]]]:
    """(label, score per stage): each probe's headline score, then the category averages."""
    from knowcomp.probes.categories import category_averages, headline_metric, headline_score

    names = list(stages)
    first = stages[names[0]]
    rows = [
        (f"{r.probe} ({headline_metric(r)})", [headline_score(stages[n][i]) for n in names])
        for i, r in enumerate(first)
    ]
    layouts = [category_averages(stages[n]) for n in names]
    for c, average in enumerate(layouts[0].categories):
        if average.present:
            rows.append((f"{average.name} average", [lay.categories[c].score for lay in layouts]))
    rows.append(("overall average", [lay.overall for lay in layouts]))
    return rows


def share_intervals(stages: dict[str, list]) -> dict[str, str]:
    """Row label -> `[low, high]` of the recovered share, per probe and for the overall
    average (probes as strata), where every stage has per-item records."""
    from knowcomp.analysis.intervals import Stratum, Undefined, recovered_share_estimate
    from knowcomp.analysis.items import aligned, item_values
    from knowcomp.probes.categories import headline_metric

    if list(stages) != ["uncompressed", "compressed", "recovered"]:
        return {}
    out, strata = {}, []
    for i, first in enumerate(stages["uncompressed"]):
        name = headline_metric(first)
        runs = [item_values(stages[n][i].records, name) for n in stages] if name else []
        complete = bool(runs) and all(r is not None for r in runs)
        pair = aligned(runs) if complete else None  # type: ignore[arg-type]
        if pair is None:
            continue
        stratum = Stratum(pair.rows, None)
        strata.append(stratum)
        found = recovered_share_estimate([stratum])
        if not isinstance(found, Undefined):
            out[f"{first.probe} ({name})"] = f"[{100 * found.low:+.0f}%, {100 * found.high:+.0f}%]"
    if strata and len(strata) == len(stages["uncompressed"]):
        found = recovered_share_estimate(strata)
        if not isinstance(found, Undefined):
            out["overall average"] = f"[{100 * found.low:+.0f}%, {100 * found.high:+.0f}%]"
    return out
