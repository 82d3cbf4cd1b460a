"""The sentence each fact is probed with under the cost-of-compression protocol, and the first
study's deduplication by sentence.

The study's code probes every LAMA fact with its first masked sentence: T-REx's first
`evidences[].masked_sentence`, Google-RE's and SQuAD's and ConceptNet's first
`masked_sentences` entry. Before scoring it drops every fact whose sentence an earlier fact of
the same probe already has (pandas `drop_duplicates` on the sentence, keeping the first), across
relations, since one sentence can state several facts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from knowcomp.data import dataset_files, load_google_re
from knowcomp.data.parsers import relation_of
from knowcomp.probes.lama import items
from knowcomp.probes.lama.items import ClozeItem, Relations


def trex_sentences(data_dir: Path | None, skip_malformed: bool) -> Relations:
    """T-REx facts with their first masked evidence sentence. Only some relations have evidence
    in the data (`lama-trex-evidence`); the other `lama-trex` relations are present with no
    facts, so a result can name them."""
    relations = items.trex(data_dir, skip_malformed, "evidence")
    for path in dataset_files("lama-trex", data_dir):
        relations.setdefault(relation_of(path), [])
    return relations


def google_re_sentences(data_dir: Path | None, skip_malformed: bool) -> Relations:
    """Google-RE facts with their first masked sentence, as given: a sentence without a
    `[MASK]`, or with several, is kept here and left out when scored (`no_slot`,
    `several_slots`)."""
    out: Relations = defaultdict(list)
    for fact in load_google_re(data_dir, skip_malformed=skip_malformed):
        out[fact.relation].append(ClozeItem(
            fact.relation, fact.uuid, fact.sub_label, fact.obj_label, items.first_sentence(fact)
        ))  # fmt: skip
    return dict(out)


@dataclass(frozen=True)
class Deduplicated:
    relations: Relations  # every relation of the input, each with the facts kept
    dropped: int  # facts whose sentence an earlier fact has


def drop_duplicate_sentences(relations: Relations) -> Deduplicated:
    """Keep the first fact of each sentence, relations in name order and facts in file order
    (the order the probe scores them in). Facts without a sentence are kept: they are left
    out, and counted, when scored."""
    seen: set[str] = set()
    kept: Relations = {}
    dropped = 0
    for relation in sorted(relations):
        kept[relation] = []
        for item in relations[relation]:
            if item.text and item.text in seen:
                dropped += 1
                continue
            seen.add(item.text)
            kept[relation].append(item)
    return Deduplicated(kept, dropped)
