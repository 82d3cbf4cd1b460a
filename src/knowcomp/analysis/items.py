"""Per-item values of a metric from a probe's stored records, keyed so two runs pair up.

A probe stores one record per item (`store.py`, table `records`); this module reads the
value each item contributes to a headline (or continuous) metric, the key that identifies the
item across runs, and its cluster (the LAMA relation; None where items are independent):

- `p@1_micro`, `p@10_micro`, `mrr_micro` (LAMA, ranked modes): the fact's `p@1`, `p@10`,
  `mrr`, for facts with a rank; key (relation, uuid); cluster the relation.
- `exact_match_micro` (LAMA, generate mode): `matched` of scored facts; the same key, cluster.
- `acc`, `acc_norm` (multiple choice): `chosen` (`chosen_norm`) equal to `gold`; key `index`.
- `acc` (LAMBADA): `greedy`; `loglikelihood` (LAMBADA): `loglikelihood`; key `index`.
- `exact_match` (QA): `matched`; key `index`.

The values are checked against the stored metric: where their mean is not the stored number
(records of another protocol), `item_values` returns None rather than a wrong pairing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

LAMA_FIELDS = {"p@1_micro": "p@1", "p@10_micro": "p@10", "mrr_micro": "mrr"}
BINARY = frozenset({"p@1_micro", "p@10_micro", "exact_match_micro", "acc", "acc_norm",
                    "exact_match"})  # fmt: skip


@dataclass(frozen=True)
class ItemValues:
    """One run's per-item values of one metric."""

    keys: tuple[Any, ...]
    values: np.ndarray
    clusters: tuple[str, ...] | None  # per item, where items share a cluster

    def __len__(self) -> int:
        return len(self.keys)

    def as_dict(self) -> dict[Any, tuple[float, str | None]]:
        clusters = self.clusters or (None,) * len(self.keys)
        return {k: (float(v), c) for k, v, c in zip(self.keys, self.values, clusters, strict=True)}


def _value(record: dict[str, Any], metric: str) -> float | None:
    """The item's value, or None where the item was not scored (or the record has no value)."""
    if metric in LAMA_FIELDS:
        if record.get("rank") is None or LAMA_FIELDS[metric] not in record:
            return None
        return float(record[LAMA_FIELDS[metric]])
    if metric == "exact_match_micro" or (metric == "exact_match" and "relation" not in record):
        return float(bool(record["matched"])) if "matched" in record else None
    if metric in ("acc", "acc_norm"):
        if "greedy" in record:  # LAMBADA
            return float(bool(record["greedy"])) if metric == "acc" else None
        chosen = record.get("chosen" if metric == "acc" else "chosen_norm")
        if chosen is None or "gold" not in record:
            return None
        return float(chosen == record["gold"])
    if metric == "loglikelihood" and "loglikelihood" in record:
        return float(record["loglikelihood"])
    return None


def _key(record: dict[str, Any]) -> Any:
    if "uuid" in record:
        return (record.get("relation"), record["uuid"])
    return record.get("index")


def item_values(
    records: list[dict[str, Any]], metric: str, stored: float | None = None
) -> ItemValues | None:
    """Per-item values of `metric` in `records`; None without records, for a metric that
    records do not carry, or where the values' mean is not `stored` (the run's own number)."""
    keys, values, clusters = [], [], []
    seen: Counter = Counter()
    for record in records:
        value = _value(record, metric)
        key = _key(record)
        if value is None or key is None:
            continue
        seen[key] += 1
        keys.append(key if seen[key] == 1 else (key, seen[key]))  # a repeated fact stays apart
        values.append(value)
        clusters.append(str(record["relation"]) if "relation" in record else None)
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    if stored is not None and not math.isclose(float(array.mean()), stored, abs_tol=1e-9):
        return None
    has_clusters = all(c is not None for c in clusters)
    return ItemValues(tuple(keys), array, tuple(clusters) if has_clusters else None)


@dataclass(frozen=True)
class Aligned:
    """Several runs on the items all of them scored, in the first run's order."""

    rows: np.ndarray  # runs x items
    keys: tuple[Any, ...]
    clusters: tuple[str, ...] | None


def aligned(runs: list[ItemValues]) -> Aligned | None:
    """The items every run scored, in the first run's order; None where they share none."""
    maps = [run.as_dict() for run in runs]
    common = [k for k in runs[0].keys if all(k in m for m in maps[1:])]
    if not common:
        return None
    rows = np.array([[m[k][0] for k in common] for m in maps])
    clusters = tuple(maps[0][k][1] for k in common) if runs[0].clusters is not None else None
    return Aligned(rows, tuple(common), clusters)  # type: ignore[arg-type]
