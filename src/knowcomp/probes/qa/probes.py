"""TriviaQA and WebQuestions: the model answers by greedy generation; an answer is right when it
equals one of the question's answers after lm-evaluation-harness's normalisation.

Prompts, zero-shot, as lm-eval writes them:

- triviaqa: `Question: {question}?\\nAnswer:`, lm-eval's `triviaqa` template. Its `?` follows
  the question's own, so most prompts end in `??` in lm-eval too. The mirror's file (llm-foundry's
  subset) holds `Question: {question}\\nAnswer:`; the question is taken back out of it.
- webqs: `Question: {question}\\nAnswer:`, lm-eval's `webqs` template. lm-eval scores WebQuestions
  by log-likelihood (is some answer the greedy continuation?); here the model generates, like
  TriviaQA, so that both open-answer probes measure the same thing.

Both stop as lm-eval's `triviaqa` does (`until`: newline, period, comma; and the end-of-sequence
token), with a cap of `RunOptions.max_new_tokens` tokens (32 by default; lm-eval's default is
256). Metrics: `exact_match` (lm-eval's decision, see `normalize`), `exact_match_squad` (the
SQuAD convention, also dropping articles) and `capped`, the share of answers that reached the
cap without stopping.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass

from knowcomp.data import loaders
from knowcomp.errors import DataError
from knowcomp.models.family import Family
from knowcomp.models.forward import continuation_problem
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import Probe, ProbeResult, RunOptions
from knowcomp.probes.generate import generate_texts, rule_for
from knowcomp.probes.inputs import decoder_rule
from knowcomp.probes.mc.choice import skipped_note
from knowcomp.probes.qa.normalize import exact_match, squad_match
from knowcomp.probes.registry import register
from knowcomp.probes.sampling import take

TRIVIAQA_STOPS = ("\n", ".", ",")  # lm-eval's triviaqa `until`


@dataclass(frozen=True)
class QAItem:
    """One open-answer question: the prompt the model continues and every accepted answer."""

    index: int  # position in the dataset
    qid: str
    question: str
    prompt: str
    answers: tuple[str, ...]


def triviaqa_prompt(context: str) -> str:
    """The mirror's `Question: Q\\nAnswer:` -> lm-eval's `Question: Q?\\nAnswer:`."""
    question = context.removeprefix("Question: ").removesuffix("\nAnswer:")
    return f"Question: {question}?\nAnswer:"


def webqs_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


class QAProbe(Probe):
    """An open-answer probe; subclasses say how to read their questions."""

    category = "world_knowledge"
    stops: tuple[str, ...] = TRIVIAQA_STOPS

    @abstractmethod
    def read(self, options: RunOptions) -> tuple[list[QAItem], list[str]]:
        """Every question of the dataset in file order, and notes on skipped lines."""

    def items(self, options: RunOptions) -> tuple[list[QAItem], list[str]]:
        items, notes = self.read(options)
        usable = []
        for item in items:
            if any(a.strip() for a in item.answers):
                usable.append(item)
            elif not options.skip_malformed:
                raise DataError(
                    f"probe {self.name}: question {item.qid} has no answer to match (an empty "
                    "answer list); fix the file, or pass --skip-malformed to leave it out"
                )
        if len(usable) < len(items):
            notes.append(f"{len(items) - len(usable)} question(s) without answers left out")
        if not usable:
            raise DataError(f"probe {self.name}: dataset {self.dataset} has no questions")
        return usable, notes

    def count(self, options: RunOptions) -> int:
        return len(take(self.items(options)[0], options.limit, options.seed, options.part))

    def family_problem(self, family: Family, options: RunOptions) -> str | None:
        return continuation_problem(family, "open-answer probes (generation)")

    def run(self, loaded: LoadedModel, options: RunOptions) -> ProbeResult:
        start = time.perf_counter()
        rule = rule_for(options, self.stops)
        items, notes = self.items(options)
        chosen = take(items, options.limit, options.seed, options.part)
        inputs = decoder_rule(loaded, options.add_bos)
        generations = generate_texts(loaded, [item.prompt for item in chosen], rule,
                                     progress=options.progress, inputs=inputs)  # fmt: skip
        records = []
        for item, generation in zip(chosen, generations, strict=True):
            prediction = generation.text.strip()  # lm-eval's remove_whitespace filter
            records.append({
                "index": item.index,
                "id": item.qid,
                "question": item.question,
                "prediction": prediction,
                "matched": exact_match(prediction, item.answers),
                "matched_squad": squad_match(prediction, item.answers),
                "capped": generation.capped,
                "tokens": len(generation.tokens),
                "answer": item.answers[0],
            })  # fmt: skip
        n = len(records)
        capped = sum(r["capped"] for r in records)
        if capped:
            notes.append(f"{capped} of {n} answers reached the {rule.max_new_tokens}-token cap "
                         "without a stop (newline, period, comma or end of text)")  # fmt: skip
        return ProbeResult(
            probe=self.name,
            category=self.category,
            metrics={
                "exact_match": sum(r["matched"] for r in records) / n,
                "exact_match_squad": sum(r["matched_squad"] for r in records) / n,
                "capped": capped / n,
            },
            counts={"items": n, "scored": n, "capped": capped},
            records=records,
            options={"limit": options.limit, "seed": options.seed,
                     "max_new_tokens": rule.max_new_tokens, "stops": list(rule.stops),
                     **(inputs.record() if inputs else {})},
            seconds=time.perf_counter() - start,
            notes=notes,
        )  # fmt: skip


@register
class TriviaQA(QAProbe):
    name = "triviaqa"
    dataset = "triviaqa"
    summary = "TriviaQA (3,000-question subset): open answer by generation, exact match of an alias"

    def read(self, options: RunOptions) -> tuple[list[QAItem], list[str]]:
        stream = loaders.load_triviaqa(options.data_dir, skip_malformed=options.skip_malformed)
        items = [
            QAItem(i, str(i), r.question, triviaqa_prompt(r.context), r.aliases)
            for i, r in enumerate(stream)
        ]
        return items, skipped_note(stream.skipped)


@register
class WebQuestions(QAProbe):
    name = "webqs"
    dataset = "webqs"
    summary = "WebQuestions test: open answer by generation, exact match of an answer"

    def read(self, options: RunOptions) -> tuple[list[QAItem], list[str]]:
        stream = loaders.load_webquestions(options.data_dir, skip_malformed=options.skip_malformed)
        items = [
            QAItem(i, r.qid, r.question, webqs_prompt(r.question), r.answers)
            for i, r in enumerate(stream)
        ]
        return items, skipped_note(stream.skipped)
