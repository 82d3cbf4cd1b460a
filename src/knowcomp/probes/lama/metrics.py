"""P@1, P@10 and MRR over the vocabulary, macro (mean of relations) and micro (all facts)."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any


def fact_scores(rank: int) -> dict[str, float]:
    return {"p@1": float(rank == 1), "p@10": float(rank <= 10), "mrr": 1.0 / rank}


def aggregate(records: list[dict[str, Any]]) -> dict[str, float]:
    """Macro averages weigh every relation alike (LAMA's convention); micro every fact (the
    first study's). Only scored records count; both use the same records."""
    scored = [r for r in records if r.get("rank") is not None]
    by_relation: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in scored:
        by_relation[r["relation"]].append(r)
    out: dict[str, float] = {}
    for key in ("p@1", "p@10", "mrr"):
        out[f"{key}_micro"] = mean(r[key] for r in scored) if scored else float("nan")
        per_relation = [mean(r[key] for r in rs) for rs in by_relation.values()]
        out[f"{key}_macro"] = mean(per_relation) if per_relation else float("nan")
    return out
