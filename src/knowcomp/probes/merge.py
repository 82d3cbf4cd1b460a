"""One probe result from the results of several parts of its items (`RunOptions.part`).

Adaptive evaluation scores a probe chunk by chunk; the stored result must read as if the probe
had scored all of those items at once: its metrics recomputed from every item's record by the
probe's own metric function, its item counts summed. Each probe kind computes its metrics in
its `run`, so this module names, per kind, the function that does it from records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from knowcomp.errors import KnowcompError
from knowcomp.probes.base import Probe, RunOptions

Metrics = Callable[[list[dict[str, Any]]], dict[str, float]]
DATASET_COUNTS = frozenset({"duplicate_sentence", "relations_without_sentences"})  # not per item


def metrics_function(probe: Probe, options: RunOptions) -> Metrics:
    """The function that computes `probe`'s metrics from its records, or a one-line error for
    a probe whose metrics cannot be recomputed that way."""
    from knowcomp.probes.lama.probes import LamaProbe
    from knowcomp.probes.mc.choice import ChoiceProbe, choice_metrics
    from knowcomp.probes.mc.tasks import Lambada
    from knowcomp.probes.qa.probes import QAProbe

    if isinstance(probe, LamaProbe):
        from knowcomp.probes.lama import string_match
        from knowcomp.probes.lama.generated import generation_metrics
        from knowcomp.probes.lama.metrics import aggregate
        from knowcomp.probes.lama.protocols import COST_OF_COMPRESSION

        if options.lama_protocol == COST_OF_COMPRESSION:
            return string_match.accuracy
        return generation_metrics if options.lama_mode == "generate" else aggregate
    if isinstance(probe, ChoiceProbe):
        return lambda records: choice_metrics(records, normalized=probe.normalized)
    if isinstance(probe, Lambada):
        return _lambada_metrics
    if isinstance(probe, QAProbe):
        return _qa_metrics
    raise KnowcompError(
        f"probe '{probe.name}' cannot be scored in parts yet, so not with --precision; run it "
        "without --precision"
    )


def _lambada_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    n = len(records)
    return {"acc": sum(r["greedy"] for r in records) / n,
            "perplexity": math.exp(-sum(r["loglikelihood"] for r in records) / n)}  # fmt: skip


def _qa_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    n = len(records)
    return {"exact_match": sum(r["matched"] for r in records) / n,
            "exact_match_squad": sum(r["matched_squad"] for r in records) / n,
            "capped": sum(r["capped"] for r in records) / n}  # fmt: skip


def merge(
    parts: Sequence[dict[str, Any]], records: list[dict[str, Any]], metrics: Metrics
) -> dict[str, Any]:
    """The result (a `ProbeResult.to_dict()`) of all `parts` together, with `records` (every
    part's records, in the order they were scored): metrics recomputed (only those the parts
    report: a probe may drop one, as SciQ drops `majority`), item counts summed, dataset-level
    counts and notes kept once, seconds added up."""
    first = next((part for part in parts if part["records"]), parts[0])
    computed = metrics(records) if records else {}
    counts: dict[str, int] = {}
    for part in parts:
        for key, value in part["counts"].items():
            if key in DATASET_COUNTS:
                counts[key] = value
            else:
                counts[key] = counts.get(key, 0) + value
    if "relations" in counts:
        counts["relations"] = len({r["relation"] for r in records if "relation" in r})
    notes = list(dict.fromkeys(note for part in parts for note in part.get("notes", [])))
    return {
        **first,
        "metrics": {k: computed[k] for k in first["metrics"] if k in computed},
        "counts": counts,
        "records": records,
        "notes": notes,
        "seconds": sum(part.get("seconds", 0.0) for part in parts),
    }
