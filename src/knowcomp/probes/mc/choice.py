"""The multiple-choice probe: score every choice's log-likelihood, pick the most likely.

Each item is a list of (context, continuation) pairs, one per choice: the usual form has one
context and a continuation per choice; WinoGrande's partial scoring has a context per choice and
one shared continuation. Metrics, as lm-evaluation-harness defines them:

- `acc`: the choice with the highest summed log-likelihood is the gold one;
- `acc_norm`: the same after dividing each log-likelihood by the length in characters of the
  choice's text (lm-eval's `len(choice)`, the text without the leading delimiter);
- `majority`: the share of the most frequent gold label among the scored items, the accuracy
  of always answering that label (the floor `acc` should clear).

Ties go to the first choice, as `numpy.argmax` does in lm-eval.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from knowcomp.errors import DataError
from knowcomp.models.family import Family
from knowcomp.models.forward import continuation_problem, require_continuations
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import Probe, ProbeResult, RunOptions
from knowcomp.probes.inputs import decoder_rule
from knowcomp.probes.mc.requests import score_pairs
from knowcomp.probes.sampling import take


@dataclass(frozen=True)
class ChoiceItem:
    """One question: a (context, continuation) pair per choice, the gold choice, and each
    choice's length in characters (the `acc_norm` divisor)."""

    index: int  # position in the dataset, kept in the records
    pairs: tuple[tuple[str, str], ...]
    gold: int
    lengths: tuple[int, ...]

    @classmethod
    def shared_context(
        cls, index: int, context: str, choices: Sequence[str], gold: int, delimiter: str = " "
    ) -> ChoiceItem:
        """The common case: one context, each choice scored as `delimiter + choice` after it."""
        return cls(
            index=index,
            pairs=tuple((context, delimiter + c) for c in choices),
            gold=gold,
            lengths=tuple(len(c) for c in choices),
        )


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choice_record(item: ChoiceItem, loglikelihoods: Sequence[float]) -> dict[str, Any]:
    """The per-item record: gold, the `acc` and `acc_norm` picks, and every log-likelihood."""
    normed = [ll / max(n, 1) for ll, n in zip(loglikelihoods, item.lengths, strict=True)]
    return {
        "index": item.index,
        "gold": item.gold,
        "chosen": argmax(loglikelihoods),
        "chosen_norm": argmax(normed),
        "loglikelihoods": [float(ll) for ll in loglikelihoods],
    }


def choice_metrics(records: Sequence[dict[str, Any]], *, normalized: bool = True) -> dict:
    """`acc`, `acc_norm` (if `normalized`) and `majority` over per-item records."""
    n = len(records)
    if n == 0:
        return {}
    metrics = {"acc": sum(r["chosen"] == r["gold"] for r in records) / n}
    if normalized:
        metrics["acc_norm"] = sum(r["chosen_norm"] == r["gold"] for r in records) / n
    metrics["majority"] = Counter(r["gold"] for r in records).most_common(1)[0][1] / n
    return metrics


def skipped_note(skipped: Iterable[Any]) -> list[str]:
    """A note for the malformed lines a `skip_malformed` read passed over, if any."""
    skipped = list(skipped)
    if not skipped:
        return []
    first = skipped[0]
    return [
        f"{len(skipped)} malformed line(s) skipped (first: {first.path.name} line "
        f"{first.line}: {first.reason})"
    ]


class ChoiceProbe(Probe):
    """A multiple-choice probe; subclasses only say how to read their items."""

    normalized: ClassVar[bool] = True  # report acc_norm (False where it always equals acc)

    @abstractmethod
    def items(self, options: RunOptions) -> tuple[list[ChoiceItem], list[str]]:
        """Every item of the dataset, in file order, and notes on what was skipped."""

    def _items(self, options: RunOptions) -> tuple[list[ChoiceItem], list[str]]:
        items, notes = self.items(options)
        if not items:
            raise DataError(f"probe {self.name}: dataset {self.dataset} has no items")
        return items, notes

    def count(self, options: RunOptions) -> int:
        return len(take(self._items(options)[0], options.limit, options.seed, options.part))

    def family_problem(self, family: Family, options: RunOptions) -> str | None:
        return continuation_problem(family, "multiple-choice probes")

    def run(self, loaded: LoadedModel, options: RunOptions) -> ProbeResult:
        start = time.perf_counter()
        require_continuations(loaded, "multiple-choice probes")
        items, notes = self._items(options)
        chosen = take(items, options.limit, options.seed, options.part)
        rule = decoder_rule(loaded, options.add_bos)
        scored = score_pairs(
            loaded, [pair for item in chosen for pair in item.pairs],
            max_tokens=options.max_tokens, progress=options.progress,
            progress_total=len(chosen), rule=rule,
        )  # fmt: skip
        records, at = [], 0
        for item in chosen:
            lls = [s.total for s in scored[at : at + len(item.pairs)]]
            at += len(item.pairs)
            records.append(choice_record(item, lls))
        return ProbeResult(
            probe=self.name,
            category=self.category,
            metrics=choice_metrics(records, normalized=self.normalized),
            counts={"items": len(chosen), "scored": len(records), "choices": len(scored)},
            records=records,
            options={
                "limit": options.limit,
                "seed": options.seed,
                **(rule.record() if rule else {}),
            },
            seconds=time.perf_counter() - start,
            notes=notes,
        )
