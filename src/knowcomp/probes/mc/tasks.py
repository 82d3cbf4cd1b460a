"""The built-in multiple-choice and language-modelling probes, prompted as lm-evaluation-harness
prompts them (zero-shot).

The mirror's BoolQ, PIQA and ARC files are llm-foundry's, already formatted into a `query`
(`Passage: ...\\nQuestion: ...?`, `Question: ...\\n`, `Question: ...?`) that llm-foundry follows
with its own answer cue (`continuation_delimiter: "\\nAnswer: "`). Scoring `query + " " + choice`
as it stands would drop that cue, and for PIQA the query's final newline would (by the pair
split's whitespace rule) move onto the choice, scoring `"\\n " + choice`. So each query is turned
back into lm-eval's own prompt, and the choice follows after lm-eval's `target_delimiter` " ":

- boolq: `{passage}\\nQuestion: {question}?\\nAnswer:` + ` no` / ` yes`; the mirror's query
  loses its `Passage: ` prefix and gains `\\nAnswer:`;
- piqa: `Question: {goal}\\nAnswer:` + ` {solution}`; the query, which ends in `\\n`, gains
  `Answer:`;
- arc-easy, arc-challenge: `Question: {question}\\nAnswer:` + ` {choice}`; the query gains
  `\\nAnswer:`;
- hellaswag: `{activity_label}: {context}` + ` {ending}`; the query as it is;
- winogrande: the sentence up to the blank, filled with each option, + ` {rest of sentence}`;
- lambada: the passage up to its last word + ` {last word}`;
- sciq: `{support}\\nQuestion: {question}\\nAnswer:` + ` {choice}`, the choices SciQ's three
  distractors and then the correct answer (lm-eval's order: the gold is always the last).

The results are lm-eval's prompts character for character, with one known difference: in
HellaSwag, lm-eval capitalizes the first letter of the context's last fragment (`ctx_b`), which
the mirror's text file keeps in lower case and does not mark off (`... on a roof. he`).

WinoGrande reports `acc` and `majority` only: every choice shares one continuation, so dividing
by its length never changes the pick and `acc_norm` would only repeat `acc` (lm-eval reports
`acc` alone too). LAMBADA reports `acc` (every token of the last word is the model's greedy
choice) and `perplexity`, `exp(-mean(log-likelihood of the last word))` over items, as lm-eval
aggregates it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

from knowcomp.data import loaders
from knowcomp.errors import DataError
from knowcomp.models.family import Family
from knowcomp.models.forward import continuation_problem, require_continuations
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import Probe, ProbeResult, RunOptions
from knowcomp.probes.inputs import decoder_rule
from knowcomp.probes.mc.choice import ChoiceItem, ChoiceProbe, skipped_note
from knowcomp.probes.mc.requests import score_pairs
from knowcomp.probes.registry import register
from knowcomp.probes.sampling import take

DELIMITER = " "  # lm-eval's default target_delimiter, between context and continuation


def _read(stream: loaders.RecordStream[Any]) -> tuple[list[Any], list[str]]:
    records = list(stream)
    return records, skipped_note(stream.skipped)


def boolq_prompt(query: str) -> str:
    """`Passage: P\\nQuestion: Q?` -> lm-eval's `P\\nQuestion: Q?\\nAnswer:`."""
    return query.removeprefix("Passage: ") + "\nAnswer:"


def question_prompt(query: str) -> str:
    """`Question: Q` (PIQA's ends in a newline) -> lm-eval's `Question: Q\\nAnswer:`."""
    return query.removesuffix("\n") + "\nAnswer:"


class PreformattedChoice(ChoiceProbe):
    """BoolQ, PIQA, ARC: the mirror's `query`, `choices`, `gold` records."""

    prompt: ClassVar[Callable[[str], str]]

    def items(self, options: RunOptions) -> tuple[list[ChoiceItem], list[str]]:
        stream = loaders.load_multiple_choice(
            self.dataset, options.data_dir, skip_malformed=options.skip_malformed
        )
        records, notes = _read(stream)
        build = type(self).prompt
        return [
            ChoiceItem.shared_context(i, build(r.query), r.choices, r.gold, DELIMITER)
            for i, r in enumerate(records)
        ], notes


@register
class BoolQ(PreformattedChoice):
    name = "boolq"
    category = "reading_comprehension"
    dataset = "boolq"
    summary = "BoolQ dev: yes/no questions about a Wikipedia passage"
    prompt = staticmethod(boolq_prompt)


@register
class Piqa(PreformattedChoice):
    name = "piqa"
    category = "common_reasoning"
    dataset = "piqa"
    summary = "PIQA dev: the more sensible of two solutions to a physical goal"
    prompt = staticmethod(question_prompt)


@register
class ArcEasy(PreformattedChoice):
    name = "arc-easy"
    category = "world_knowledge"
    dataset = "arc-easy"
    summary = "ARC-Easy test: grade-school science questions, four choices"
    prompt = staticmethod(question_prompt)


@register
class ArcChallenge(PreformattedChoice):
    name = "arc-challenge"
    category = "world_knowledge"
    dataset = "arc-challenge"
    summary = "ARC-Challenge test: the science questions simple baselines fail, four choices"
    prompt = staticmethod(question_prompt)


def sciq_prompt(support: str, question: str) -> str:
    """lm-eval's SciQ prompt; without a support passage it starts with the newline, as there."""
    return f"{support.lstrip()}\nQuestion: {question}\nAnswer:"


@register
class SciQ(ChoiceProbe):
    """lm-eval's `sciq`: choices in its order (SciQ's three distractors, then the answer)."""

    name = "sciq"
    category = "world_knowledge"
    dataset = "sciq"
    summary = "SciQ test: a science question after its support passage, four choices"

    def items(self, options: RunOptions) -> tuple[list[ChoiceItem], list[str]]:
        stream = loaders.load_sciq(options.data_dir, skip_malformed=options.skip_malformed)
        records, notes = _read(stream)
        return [
            ChoiceItem.shared_context(i, sciq_prompt(r.support, r.question),
                                      [*r.distractors, r.correct_answer], 3, DELIMITER)
            for i, r in enumerate(records)
        ], notes  # fmt: skip

    def run(self, loaded: LoadedModel, options: RunOptions) -> ProbeResult:
        result = super().run(loaded, options)
        result.metrics.pop("majority", None)  # the gold is always choice 3: 1.0 says nothing
        result.notes.append(
            "the answer is always the last of the four choices (lm-eval's "
            "order), so there is no majority baseline; chance is 0.25"
        )
        return result


@register
class HellaSwag(ChoiceProbe):
    name = "hellaswag"
    category = "language_understanding"
    dataset = "hellaswag"
    summary = "HellaSwag val: the likeliest of four endings to an activity description"

    def items(self, options: RunOptions) -> tuple[list[ChoiceItem], list[str]]:
        stream = loaders.load_hellaswag(options.data_dir, skip_malformed=options.skip_malformed)
        records, notes = _read(stream)
        return [
            ChoiceItem.shared_context(i, r.query, r.endings, r.gold, DELIMITER)
            for i, r in enumerate(records)
        ], notes


@register
class Winogrande(ChoiceProbe):
    name = "winogrande"
    category = "language_understanding"
    dataset = "winogrande"
    summary = "WinoGrande dev: which name fills the blank, by partial scoring of the rest"
    normalized = False  # one shared continuation: acc_norm always equals acc

    def items(self, options: RunOptions) -> tuple[list[ChoiceItem], list[str]]:
        stream = loaders.load_winogrande(options.data_dir, skip_malformed=options.skip_malformed)
        records, notes = _read(stream)
        return [
            ChoiceItem(
                index=i,
                pairs=tuple((c, DELIMITER + r.continuation) for c in r.context_options),
                gold=r.gold,
                lengths=tuple(len(c) for c in r.context_options),
            )
            for i, r in enumerate(records)
        ], notes


@register
class Lambada(Probe):
    """Predict a passage's last word: greedy accuracy and perplexity of that word."""

    name = "lambada"
    category = "language_understanding"
    dataset = "lambada"
    summary = "LAMBADA (OpenAI): the last word of a passage, greedy accuracy and perplexity"

    def _items(self, options: RunOptions) -> tuple[list[tuple[int, Any]], list[str]]:
        stream = loaders.load_lambada(options.data_dir, skip_malformed=options.skip_malformed)
        records, notes = _read(stream)
        if not records:
            raise DataError(f"probe {self.name}: dataset {self.dataset} has no items")
        return list(enumerate(records)), notes

    def count(self, options: RunOptions) -> int:
        return len(take(self._items(options)[0], options.limit, options.seed, options.part))

    def family_problem(self, family: Family, options: RunOptions) -> str | None:
        return continuation_problem(family, "language-modelling probes")

    def run(self, loaded: LoadedModel, options: RunOptions) -> ProbeResult:
        start = time.perf_counter()
        require_continuations(loaded, "language-modelling probes")
        items, notes = self._items(options)
        chosen = take(items, options.limit, options.seed, options.part)
        rule = decoder_rule(loaded, options.add_bos)
        scored = score_pairs(
            loaded, [(r.context, DELIMITER + r.continuation) for _, r in chosen],
            max_tokens=options.max_tokens, progress=options.progress, progress_total=len(chosen),
            rule=rule,
        )  # fmt: skip
        records = [
            {
                "index": i,
                "word": r.continuation,
                "loglikelihood": s.total,
                "greedy": s.greedy,
                "tokens": len(s.logprobs),
            }
            for (i, r), s in zip(chosen, scored, strict=True)
        ]
        n = len(records)
        metrics = {
            "acc": sum(r["greedy"] for r in records) / n,
            "perplexity": math.exp(-sum(r["loglikelihood"] for r in records) / n),
        }
        return ProbeResult(
            probe=self.name,
            category=self.category,
            metrics=metrics,
            counts={"items": n, "scored": n},
            records=records,
            options={
                "limit": options.limit,
                "seed": options.seed,
                **(rule.record() if rule else {}),
            },
            seconds=time.perf_counter() - start,
            notes=notes,
        )
