"""Candidate ranking for decoders: score every object of the relation after the context.

Each candidate is a continuation `" " + object` of the text before the slot, scored by its
summed log-likelihood exactly as the multiple-choice probes score a choice, so objects of
several tokens are ranked like single-token ones. The gold object's rank among the relation's
distinct objects gives P@1, P@10 and MRR. Cost grows with facts x candidates: use --limit.
"""

from __future__ import annotations

from typing import Any

from knowcomp.models.forward import require_decoder
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.inputs import InputRule
from knowcomp.probes.lama.items import SLOT, ClozeItem, Relations
from knowcomp.probes.lama.metrics import fact_scores
from knowcomp.probes.mc.requests import score_pairs


def score_candidates(
    loaded: LoadedModel,
    chosen: list[tuple[ClozeItem, dict[str, Any]]],
    relations: Relations,
    options: RunOptions,
    rule: InputRule | None = None,
) -> None:
    """Fill each record with the gold object's rank among its relation's objects (`rule`: how
    text becomes tokens; the tokenizer's `auto` rule by default)."""
    require_decoder(loaded, "LAMA candidate-ranking probes")
    candidates = {rel: sorted({item.obj for item in items}) for rel, items in relations.items()}
    pairs: list[tuple[str, str]] = []
    slices: list[tuple[dict[str, Any], list[str], int]] = []
    for item, record in chosen:
        if item.problem:
            record["skipped"] = item.problem
            continue
        context = item.text.split(SLOT)[0].rstrip()
        objects = candidates[item.relation]
        slices.append((record, objects, len(pairs)))
        pairs.extend((context, f" {obj}") for obj in objects)
    scored = score_pairs(loaded, pairs, max_tokens=options.max_tokens, progress=options.progress,
                         progress_total=len(slices), rule=rule)  # fmt: skip
    for record, objects, start in slices:
        totals = [s.total for s in scored[start : start + len(objects)]]
        index = objects.index(record["object"])
        gold = totals[index]
        # ties as the pick below breaks them: the earlier object first
        rank = 1 + sum(t > gold or (t == gold and i < index) for i, t in enumerate(totals))
        best = max(range(len(objects)), key=totals.__getitem__)
        record.update(rank=rank, prediction=objects[best], candidates=len(objects),
                      **fact_scores(rank))  # fmt: skip
