"""LAMA facts as cloze items: a text with one `[Y]` slot where the object goes.

T-REx and Google-RE fill a relation template with the subject; SQuAD and ConceptNet use their
masked sentences; T-REx evidence (the first masked Wikipedia sentence of each fact, as the
first study did) is a named option.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowcomp.data import (
    load_conceptnet_subset,
    load_google_re,
    load_lama_facts,
    load_relation_templates,
    load_squad_cloze,
    load_trex_evidence,
)
from knowcomp.data.records import MASK

SLOT = "[Y]"

# LAMA's own templates for Google-RE (they are not in relations.jsonl).
GOOGLE_RE_TEMPLATES = {
    "place_of_birth": "[X] was born in [Y] .",
    "date_of_birth": "[X] (born [Y]).",
    "place_of_death": "[X] died in [Y] .",
}


@dataclass(frozen=True)
class ClozeItem:
    relation: str
    uuid: str
    subject: str
    obj: str
    text: str  # holds SLOT exactly once, or is unscorable (see `problem`)

    @property
    def problem(self) -> str | None:
        slots = self.text.count(SLOT)
        return None if slots == 1 else ("no_slot" if slots == 0 else "several_slots")


Relations = dict[str, list[ClozeItem]]


def _fill(template: str, subject: str) -> str:
    return template.replace("[X]", subject)


def trex(data_dir: Path | None, skip_malformed: bool, source: str = "templates") -> Relations:
    out: Relations = defaultdict(list)
    if source == "evidence":
        for fact in load_trex_evidence(data_dir, skip_malformed=skip_malformed):
            text = (fact.masked_sentence or "").replace(MASK, SLOT)
            out[fact.relation].append(
                ClozeItem(fact.relation, fact.uuid, fact.sub_label, fact.obj_label, text)
            )
        return dict(out)
    templates = {t.relation: t.template for t in load_relation_templates(data_dir)}
    for fact in load_lama_facts(data_dir, skip_malformed=skip_malformed):
        text = _fill(templates[fact.relation], fact.sub_label)
        out[fact.relation].append(
            ClozeItem(fact.relation, fact.uuid, fact.sub_label, fact.obj_label, text)
        )
    return dict(out)


def google_re(data_dir: Path | None, skip_malformed: bool, source: str = "templates") -> Relations:
    out: Relations = defaultdict(list)
    for fact in load_google_re(data_dir, skip_malformed=skip_malformed):
        if source == "evidence":
            sentences = fact.single_mask_sentences
            text = sentences[0].replace(MASK, SLOT) if sentences else ""
        else:
            text = _fill(GOOGLE_RE_TEMPLATES[fact.relation], fact.sub_label)
        out[fact.relation].append(
            ClozeItem(fact.relation, fact.uuid, fact.sub_label, fact.obj_label, text)
        )
    return dict(out)


def first_sentence(record: Any) -> str:
    """A record's first masked sentence with the slot marked ("" when it has none)."""
    return record.masked_sentences[0].replace(MASK, SLOT) if record.masked_sentences else ""


def squad(data_dir: Path | None, skip_malformed: bool, source: str = "sentences") -> Relations:
    items = [
        ClozeItem("squad", rec.id, rec.sub_label, rec.obj_label, first_sentence(rec))
        for rec in load_squad_cloze(data_dir, skip_malformed=skip_malformed)
    ]  # fmt: skip
    return {"squad": items}


def conceptnet(data_dir: Path | None, skip_malformed: bool, source: str = "sentences") -> Relations:
    out: Relations = defaultdict(list)
    for rec in load_conceptnet_subset(data_dir, skip_malformed=skip_malformed):
        out[rec.relation].append(
            ClozeItem(rec.relation, rec.uuid, rec.sub_label, rec.obj_label, first_sentence(rec))
        )
    return dict(out)
