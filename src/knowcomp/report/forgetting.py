"""Per-fact forgetting: what the baseline got right and a compressed model got wrong.

LAMA facts are matched by `uuid` between a trial and its baseline (same model, seed and item
limit, so the same facts); a fact counts when both scored it (in the ranked modes, its object
is one token) and the baseline was right (P@1 = 1; in generate mode, an exact match).
Multiple-choice items are matched by `index`: forgotten when the baseline chose the gold
answer and the compressed model did not. Items a compressed model gets right that its baseline
got wrong are counted too (`gained`), since compression does not only take knowledge away. QA
probes are not compared item by item.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowcomp.report.frame import Frame
from knowcomp.store import ResultsStore

FACT_COLUMNS = ("model", "sweep", "recipe", "seed", "probe", "relation", "uuid", "subject",
                "object", "baseline_prediction", "prediction", "rank")  # fmt: skip
ITEM_COLUMNS = ("model", "sweep", "recipe", "seed", "probe", "index", "gold", "baseline_chosen",
                "chosen")  # fmt: skip
SUMMARY_COLUMNS = ("model", "sweep", "recipe", "seed", "probe", "relation", "baseline_correct",
                   "forgotten", "share_forgotten", "gained")  # fmt: skip
ALL = "(all)"


@dataclass
class Forgetting:
    facts: list[dict[str, Any]] = field(default_factory=list)  # LAMA facts forgotten
    items: list[dict[str, Any]] = field(default_factory=list)  # multiple-choice items forgotten
    summary: list[dict[str, Any]] = field(default_factory=list)  # per trial x probe x relation

    def totals(self) -> list[dict[str, Any]]:
        """The summary's per trial x probe rows (relation `(all)`)."""
        return [row for row in self.summary if row["relation"] == ALL]


def find_forgetting(store: ResultsStore, frame: Frame) -> Forgetting:
    out = Forgetting()
    cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def records(key: str, probe: str) -> list[dict[str, Any]]:
        if (key, probe) not in cache:
            cache[(key, probe)] = store.records(key, probe)
        return cache[(key, probe)]

    for point in frame.points:
        if point.kind not in ("lama", "mc"):
            continue
        base_key = frame.baseline_keys.get((point.model, point.seed, point.probe))
        if base_key is None:
            continue
        base, mine = records(base_key, point.probe), records(point.trial_key, point.probe)
        if not base or not mine:
            continue
        head = {"model": point.model, "sweep": point.sweep, "recipe": point.recipe,
                "seed": point.seed, "probe": point.probe}  # fmt: skip
        if point.kind == "lama":
            _lama(head, base, mine, out)
        else:
            _choice(head, base, mine, out)
        cache.pop((point.trial_key, point.probe), None)
    return out


def _lama_correct(record: dict[str, Any]) -> bool | None:
    """Right at rank 1 (ranked modes) or an exact match (generate mode); None: not scored."""
    if "matched" in record:
        return bool(record["matched"])
    if record.get("rank") is None or "p@1" not in record:
        return None
    return record["p@1"] == 1


def _lama(head: dict[str, Any], base: list[dict], mine: list[dict], out: Forgetting) -> None:
    before = {r.get("uuid"): r for r in base if _lama_correct(r) is not None}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # correct, forgotten, gained
    for record in mine:
        known = before.get(record.get("uuid"))
        now = _lama_correct(record)
        if known is None or now is None:
            continue
        tally = counts[known["relation"]]
        was = bool(_lama_correct(known))
        tally[0] += was
        tally[1] += was and not now
        tally[2] += now and not was
        if was and not now:
            out.facts.append({**head, "relation": known["relation"], "uuid": known["uuid"],
                              "subject": known.get("subject"), "object": known.get("object"),
                              "baseline_prediction": known.get("prediction"),
                              "prediction": record.get("prediction"),
                              "rank": record.get("rank")})  # fmt: skip
    total = [sum(t[i] for t in counts.values()) for i in range(3)]
    out.summary.append(_summary(head, ALL, total))
    for relation in sorted(counts):
        out.summary.append(_summary(head, relation, counts[relation]))


def _choice(head: dict[str, Any], base: list[dict], mine: list[dict], out: Forgetting) -> None:
    before = {r["index"]: r for r in base}
    tally = [0, 0, 0]
    for record in mine:
        known = before.get(record.get("index"))
        if known is None:
            continue
        was, now = known["chosen"] == known["gold"], record["chosen"] == record["gold"]
        tally[0] += was
        tally[1] += was and not now
        tally[2] += now and not was
        if was and not now:
            out.items.append({**head, "index": record["index"], "gold": record["gold"],
                              "baseline_chosen": known["chosen"],
                              "chosen": record["chosen"]})  # fmt: skip
    out.summary.append(_summary(head, ALL, tally))


def _summary(head: dict[str, Any], relation: str, tally: list[int]) -> dict[str, Any]:
    correct, forgotten, gained = tally
    share = forgotten / correct if correct else None
    return {**head, "relation": relation, "baseline_correct": correct, "forgotten": forgotten,
            "share_forgotten": share, "gained": gained}  # fmt: skip


def write_forgetting(forgetting: Forgetting, folder: Path) -> list[Path]:
    """`forgetting_facts.csv`, `forgetting_items.csv` and `forgetting_by_relation.csv`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, columns, rows in (
        ("forgetting_facts.csv", FACT_COLUMNS, forgetting.facts),
        ("forgetting_items.csv", ITEM_COLUMNS, forgetting.items),
        ("forgetting_by_relation.csv", SUMMARY_COLUMNS, forgetting.summary),
    ):
        path = folder / name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                share = row.get("share_forgotten")
                writer.writerow({**row, "share_forgotten": "" if share is None else f"{share:.6g}"}
                                if "share_forgotten" in row else row)  # fmt: skip
        written.append(path)
    return written
