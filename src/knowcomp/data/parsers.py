"""Turn one raw item of a mirror file into its typed record, checking fields and types.

A parser raises `Malformed` with a reason when a field is missing or has the wrong type, so that
bad data is caught where it is read, with its file and line, not deep inside a probe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from knowcomp.data.readers import Malformed
from knowcomp.data.records import (
    ConceptNetFact,
    GoogleReFact,
    HellaSwagItem,
    Judgment,
    LamaFact,
    LambadaItem,
    MultipleChoiceItem,
    RelationTemplate,
    SciQItem,
    SquadCloze,
    TrexEvidence,
    TriviaQAItem,
    WebQuestion,
    WinograndeItem,
)

Parser = Callable[[Any, Path], Any]

SCIQ_COLUMNS = (
    "question",
    "support",
    "correct_answer",
    "ref_distractor1",
    "ref_distractor2",
    "ref_distractor3",
)
HELLASWAG_ENDINGS = 4


def relation_of(path: Path) -> str:
    """The relation a LAMA file holds, from its name: `P19.jsonl` -> `P19`,
    `place_of_birth_test.jsonl` -> `place_of_birth`."""
    return path.name.split(".", 1)[0].removesuffix("_test")


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise Malformed(_wrong(obj, key, "a string"))
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise Malformed(_wrong(obj, key, "a string or null"))
    return value


def _strs(obj: dict[str, Any], key: str, *, min_len: int = 0, optional: bool = False) -> tuple:
    value = obj.get(key)
    if value is None and optional:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Malformed(_wrong(obj, key, "a list of strings"))
    if len(value) < min_len:
        raise Malformed(f"field {key!r} has {len(value)} item(s), at least {min_len} expected")
    return tuple(value)


def _gold(obj: dict[str, Any], key: str, options: int) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(_wrong(obj, key, "an integer"))
    if not 0 <= value < options:
        raise Malformed(f"field {key!r} is {value}, outside 0..{options - 1}")
    return value


def _wrong(obj: dict[str, Any], key: str, expected: str) -> str:
    if key not in obj:
        return f"field {key!r} is missing"
    return f"field {key!r} should be {expected}, found {type(obj[key]).__name__}"


def lama_fact(obj: dict[str, Any], path: Path) -> LamaFact:
    return LamaFact(
        relation_of(path), _str(obj, "sub_label"), _str(obj, "obj_label"), _str(obj, "uuid")
    )


def relation_template(obj: dict[str, Any], path: Path) -> RelationTemplate:
    template = _str(obj, "template")
    if "[X]" not in template or "[Y]" not in template:
        raise Malformed(f"template {template!r} lacks the [X] or [Y] slot")
    return RelationTemplate(
        _str(obj, "relation"),
        template,
        _str(obj, "label"),
        _opt_str(obj, "type"),
        _opt_str(obj, "description"),
    )


def trex_evidence(obj: dict[str, Any], path: Path) -> TrexEvidence:
    evidences = obj.get("evidences")
    if not isinstance(evidences, list) or not all(isinstance(e, dict) for e in evidences):
        raise Malformed(_wrong(obj, "evidences", "a list of objects"))
    sentences = tuple(
        e["masked_sentence"] for e in evidences if isinstance(e.get("masked_sentence"), str)
    )
    return TrexEvidence(
        relation_of(path),
        _str(obj, "sub_label"),
        _str(obj, "obj_label"),
        _str(obj, "uuid"),
        _opt_str(obj, "sub_uri"),
        _opt_str(obj, "obj_uri"),
        sentences,
    )


def google_re(obj: dict[str, Any], path: Path) -> GoogleReFact:
    judgments = obj.get("judgments")
    if not isinstance(judgments, list) or not all(
        isinstance(j, dict) and isinstance(j.get("judgment"), str) for j in judgments
    ):
        raise Malformed(_wrong(obj, "judgments", "a list of {rater, judgment} objects"))
    return GoogleReFact(
        relation_of(path),
        _str(obj, "sub_label"),
        _str(obj, "obj_label"),
        _str(obj, "uuid"),
        _strs(obj, "masked_sentences"),
        tuple(Judgment(str(j.get("rater", "")), j["judgment"]) for j in judgments),
        _strs(obj, "obj_aliases", optional=True),
    )


def squad_cloze(obj: dict[str, Any], path: Path) -> SquadCloze:
    return SquadCloze(
        _str(obj, "id"),
        _str(obj, "sub_label"),
        _str(obj, "obj_label"),
        _strs(obj, "masked_sentences", min_len=1),
    )


def conceptnet(obj: dict[str, Any], path: Path) -> ConceptNetFact:
    return ConceptNetFact(
        _str(obj, "pred"),
        _str(obj, "sub_label"),
        _str(obj, "obj_label"),
        _str(obj, "uuid"),
        _strs(obj, "masked_sentences", min_len=1),
        _strs(obj, "masked_negations", optional=True),
        _strs(obj, "masked_misprimed", optional=True),
    )


def multiple_choice(obj: dict[str, Any], path: Path) -> MultipleChoiceItem:
    choices = _strs(obj, "choices", min_len=2)
    return MultipleChoiceItem(_str(obj, "query"), choices, _gold(obj, "gold", len(choices)))


def winogrande(obj: dict[str, Any], path: Path) -> WinograndeItem:
    options = _strs(obj, "context_options", min_len=2)
    return WinograndeItem(options, _str(obj, "continuation"), _gold(obj, "gold", len(options)))


def lambada(obj: dict[str, Any], path: Path) -> LambadaItem:
    return LambadaItem(_str(obj, "context"), _str(obj, "continuation"))


def hellaswag(lines: tuple[str, ...], path: Path) -> HellaSwagItem:
    context_line, gold_line, *endings = lines
    label, sep, context = context_line.partition(": ")
    if not sep:
        raise Malformed("context line lacks the 'activity_label: ' prefix")
    try:
        gold = int(gold_line)
    except ValueError:
        raise Malformed(f"gold line {gold_line!r} is not an index (line 2 of the item)") from None
    if not 0 <= gold < HELLASWAG_ENDINGS or len(endings) != HELLASWAG_ENDINGS:
        raise Malformed(f"gold index {gold} is outside 0..{HELLASWAG_ENDINGS - 1}")
    return HellaSwagItem(label, context, tuple(endings), gold)


def sciq(row: dict[str, str], path: Path) -> SciQItem:
    for key in (
        "question",
        "correct_answer",
        "ref_distractor1",
        "ref_distractor2",
        "ref_distractor3",
    ):
        if not row[key].strip():
            raise Malformed(f"column {key!r} is empty")
    return SciQItem(
        row["question"],
        row["support"],
        row["correct_answer"],
        (row["ref_distractor1"], row["ref_distractor2"], row["ref_distractor3"]),
    )


def triviaqa(obj: dict[str, Any], path: Path) -> TriviaQAItem:
    aliases = _strs(obj, "aliases", min_len=1)  # an empty alias list could never match
    return TriviaQAItem(_str(obj, "context"), _str(obj, "answer"), aliases)


def webquestion(obj: dict[str, Any], path: Path) -> WebQuestion:
    return WebQuestion(_str(obj, "qId"), _str(obj, "qText"), _strs(obj, "answers", min_len=1))
