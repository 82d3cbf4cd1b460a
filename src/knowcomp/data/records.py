"""Plain typed records, one type per file format of the evaluation data mirror.

Records keep the mirror's field values as they are (no lower-casing, no stripping, no template
filling): deciding how to turn a record into model input is the probes' job, so that every probe
reads the same data and a change of formatting shows up in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

MASK = "[MASK]"


@dataclass(frozen=True)
class LamaFact:
    """A LAMA T-REx fact; `relation` is the Wikidata property id taken from the file name."""

    relation: str
    sub_label: str
    obj_label: str
    uuid: str


@dataclass(frozen=True)
class RelationTemplate:
    """A LAMA relation template such as `[X] was born in [Y] .`; `type` is N-1, N-M or 1-1."""

    relation: str
    template: str
    label: str
    type: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class TrexEvidence:
    """A LAMA T-REx fact with every Wikipedia evidence sentence, the object masked."""

    relation: str
    sub_label: str
    obj_label: str
    uuid: str
    sub_uri: str | None
    obj_uri: str | None
    masked_sentences: tuple[str, ...]

    @property
    def masked_sentence(self) -> str | None:
        """The first evidence sentence, the one LAMA itself probes with; None if there is none."""
        return self.masked_sentences[0] if self.masked_sentences else None


@dataclass(frozen=True)
class Judgment:
    """One human rater's verdict on a Google-RE fact: `yes`, `no` or `skip`."""

    rater: str
    judgment: str


@dataclass(frozen=True)
class GoogleReFact:
    """A LAMA Google-RE fact; `relation` is `place_of_birth`, `date_of_birth` or `place_of_death`.

    Caution: some `masked_sentences` hold no `[MASK]` at all, or more than one (see
    `single_mask_sentences`).
    """

    relation: str
    sub_label: str
    obj_label: str
    uuid: str
    masked_sentences: tuple[str, ...]
    judgments: tuple[Judgment, ...]
    obj_aliases: tuple[str, ...] = ()

    @property
    def single_mask_sentences(self) -> tuple[str, ...]:
        """The masked sentences with exactly one `[MASK]`, the only ones a one-token cloze fits."""
        return tuple(s for s in self.masked_sentences if s.count(MASK) == 1)

    @property
    def yes_votes(self) -> int:
        """How many raters judged the fact supported by its evidence."""
        return sum(1 for j in self.judgments if j.judgment == "yes")

    @property
    def no_votes(self) -> int:
        """How many raters judged the fact not supported by its evidence."""
        return sum(1 for j in self.judgments if j.judgment == "no")


@dataclass(frozen=True)
class SquadCloze:
    """A LAMA SQuAD cloze statement; `sub_label` is always the placeholder `Squad`."""

    id: str
    sub_label: str
    obj_label: str
    masked_sentences: tuple[str, ...]


@dataclass(frozen=True)
class ConceptNetFact:
    """A LAMA ConceptNet fact (from the 146-fact subset); `relation` is ConceptNet's `pred`."""

    relation: str
    sub_label: str
    obj_label: str
    uuid: str
    masked_sentences: tuple[str, ...]
    masked_negations: tuple[str, ...] = ()
    masked_misprimed: tuple[str, ...] = ()


@dataclass(frozen=True)
class MultipleChoiceItem:
    """A pre-formatted multiple-choice item (BoolQ, PIQA, ARC): score each choice after `query`."""

    query: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class WinograndeItem:
    """A WinoGrande item in partial-scoring form: score `continuation` after each context."""

    context_options: tuple[str, ...]
    continuation: str
    gold: int


@dataclass(frozen=True)
class LambadaItem:
    """A LAMBADA passage; `continuation` is the final word (no leading space in the file)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class HellaSwagItem:
    """A HellaSwag item: the context split off its activity label, four endings, the gold index.

    The endings carry no leading space, and the context's last sentence fragment is kept in the
    file's casing (lm-evaluation-harness capitalizes it; this file does not).
    """

    activity_label: str
    context: str
    endings: tuple[str, ...]
    gold: int

    @property
    def query(self) -> str:
        """The context line exactly as the file has it: `activity_label: context`."""
        return f"{self.activity_label}: {self.context}"


@dataclass(frozen=True)
class SciQItem:
    """A SciQ question with its correct answer and SciQ's own three distractors.

    `support` is the empty string where the file has no supporting paragraph.
    """

    question: str
    support: str
    correct_answer: str
    distractors: tuple[str, str, str]


@dataclass(frozen=True)
class TriviaQAItem:
    """A TriviaQA question; `context` is the prompt `Question: ...\\nAnswer:`."""

    context: str
    answer: str
    aliases: tuple[str, ...]

    @property
    def question(self) -> str:
        """The bare question, without the `Question:` / `Answer:` prompt around it."""
        text = self.context.removeprefix("Question:").strip()
        return text.removesuffix("Answer:").strip()


@dataclass(frozen=True)
class WebQuestion:
    """A WebQuestions question (`qId`, `qText`, `answers` in the file)."""

    qid: str
    question: str
    answers: tuple[str, ...]
