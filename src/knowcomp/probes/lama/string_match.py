"""Scoring under the cost-of-compression protocol: the decoded top token against the object.

A fact is right when the model's most likely token at the slot, decoded, lower-cased and
stripped, equals the object as the model's tokenizer writes it back (its one token decoded:
the study's label, which is the object itself unless the tokenizer normalizes text, as uncased
BERT drops accents), lower-cased and stripped. So " Paris", "Paris" and "paris" all answer
"Paris", where the template protocol wants the object's own token. An object of several tokens
cannot be one prediction: it stays in the denominator and counts as wrong, as in the study. The
headline is the micro top-1 accuracy over every fact with one slot (`p@1_micro`); `p@1_macro`
averages relations, for comparison.

Requests are built by `ClozeBuilder` (every family, the template protocol's tokenization) and
scored by the engine; only the comparison and the denominator differ, so they are here.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from statistics import mean
from typing import Any

from knowcomp.errors import DataError
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import ProbeResult, RunOptions
from knowcomp.probes.inputs import InputRule, decoder_rule
from knowcomp.probes.lama.cloze import score_clozes
from knowcomp.probes.lama.evidence import Deduplicated, drop_duplicate_sentences
from knowcomp.probes.lama.items import Relations
from knowcomp.probes.lama.protocols import COST_OF_COMPRESSION, result_name
from knowcomp.probes.sampling import take

MULTI_TOKEN = "multi_token"


def normalized(text: str) -> str:
    """The study's comparison form: lower-cased, surrounding space stripped."""
    return text.strip().lower()


def study_facts(probe: Any, options: RunOptions) -> Deduplicated:
    """The probe's facts with the sentences the study used, duplicates dropped (before
    `--limit` takes its per-relation sample, so a fact's fate does not depend on the limit)."""
    relations: Relations = probe.sentences(options)
    if not any(relations.values()):
        raise DataError(f"probe {probe.name}: every relation of {probe.dataset} is empty")
    return drop_duplicate_sentences(relations)


def count(probe: Any, options: RunOptions) -> int:
    facts = study_facts(probe, options).relations
    return sum(len(take(v, options.limit, options.seed, options.part, r)) for r, v in facts.items())


Chosen = list[tuple[Any, dict[str, Any]]]  # (cloze item, its record)


def score(loaded: LoadedModel, chosen: Chosen, options: RunOptions, rule: InputRule | None) -> None:
    """Fill each record: `prediction` (the decoded top token), `rank` (the object token's rank,
    None for several tokens), `correct` and `p@1`; or `skipped` with why the fact has no
    single slot (left out of every metric)."""

    def unscorable(record: dict[str, Any], why: str) -> None:
        if why == MULTI_TOKEN:  # in the denominator, always wrong
            record.update({MULTI_TOKEN: True, "prediction": None, "rank": None,
                           "correct": False, "p@1": 0.0})  # fmt: skip
        else:
            record["skipped"] = why

    scored = score_clozes(loaded, chosen, rule, unscorable=unscorable,
                          max_tokens=options.max_tokens, progress=options.progress)  # fmt: skip
    for record, request, result in scored:
        prediction = loaded.tokenizer.decode([result.first_top])
        label = loaded.tokenizer.decode([request.targets[0]])
        correct = normalized(prediction) == normalized(label)
        record.update({"prediction": prediction, "rank": result.first_rank,
                       "correct": correct, "p@1": float(correct)})  # fmt: skip


def accuracy(records: list[dict[str, Any]]) -> dict[str, float]:
    """Top-1 accuracy over the facts in the denominator (one slot; several-token objects
    included, as wrong): micro over facts, macro over relations."""
    counted = [r for r in records if "correct" in r]
    by_relation: dict[str, list[float]] = defaultdict(list)
    for r in counted:
        by_relation[r["relation"]].append(r["p@1"])
    nan = float("nan")
    return {
        "p@1_micro": mean(r["p@1"] for r in counted) if counted else nan,
        "p@1_macro": mean(mean(v) for v in by_relation.values()) if by_relation else nan,
    }


def run(probe: Any, loaded: LoadedModel, options: RunOptions) -> ProbeResult:
    """Run `probe` (a `LamaProbe`) under the cost-of-compression protocol."""
    start = time.perf_counter()
    facts = study_facts(probe, options)
    chosen = [
        (item, {"relation": relation, "uuid": item.uuid, "subject": item.subject,
                "object": item.obj, "sentence": item.text})
        for relation in sorted(facts.relations)
        for item in take(facts.relations[relation], options.limit, options.seed, options.part,
                         relation)
    ]  # fmt: skip
    rule = decoder_rule(loaded, options.add_bos)
    score(loaded, chosen, options, rule)
    records = [record for _, record in chosen]
    skipped = Counter(r["skipped"] for r in records if "skipped" in r)
    empty = sorted(r for r, v in facts.relations.items() if not v)
    counts = {
        "facts": len(records),
        "scored": sum("correct" in r for r in records),
        "correct": sum(bool(r.get("correct")) for r in records),
        MULTI_TOKEN: sum(bool(r.get(MULTI_TOKEN)) for r in records),
        "relations": len({r["relation"] for r in records}),
        "duplicate_sentence": facts.dropped,
        "relations_without_sentences": len(empty),
        **skipped,
    }
    return ProbeResult(
        probe=result_name(probe.name, COST_OF_COMPRESSION),
        category=probe.category,
        metrics=accuracy(records),
        counts=counts,
        records=records,
        options={
            "limit": options.limit,
            "seed": options.seed,
            "mode": options.lama_mode,
            "protocol": COST_OF_COMPRESSION,
            **(rule.record() if rule is not None else {}),
        },
        seconds=time.perf_counter() - start,
        notes=_notes(counts, skipped, empty),
    )


def _notes(counts: dict[str, int], skipped: Counter, empty: list[str]) -> list[str]:
    notes = [
        f"scored under the {COST_OF_COMPRESSION} protocol: first masked sentence per fact, "
        "string match of the top token, several-token objects counted wrong, micro top-1"
    ]
    if empty:
        notes.append(
            f"{len(empty)} relation(s) have no sentences in the data and are left out: "
            + ", ".join(empty)
        )
    if counts["duplicate_sentence"]:
        notes.append(
            f"{counts['duplicate_sentence']} fact(s) repeat an earlier fact's sentence and are "
            "dropped before sampling, as the study did"
        )
    if counts[MULTI_TOKEN]:
        notes.append(
            f"{counts[MULTI_TOKEN]} of {counts['scored']} counted facts have objects of several "
            "tokens for this model; they count as wrong"
        )
    if skipped:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
        left_out = sum(skipped.values())
        notes.append(f"{left_out} fact(s) have no single slot and are left out ({why})")
    return notes
