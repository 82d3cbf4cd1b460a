"""Knowledge categories, each probe's headline score, and the layout of the second study's tables.

Every probe has one of four categories: world knowledge (LAMA, ARC, SciQ, TriviaQA,
WebQuestions), common reasoning (PIQA), language understanding (HellaSwag, LAMBADA, WinoGrande)
and reading comprehension (BoolQ). *Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024)
reports nine tasks, then the World / Common / Language averages, then the overall average;
`study_layout` builds that row from a run's results, and `category_averages` averages whatever
probes a run has, by category (what `knowcomp eval` prints under its table).

One number per probe, its headline (`headline_name`), defined here and nowhere else: P@1
(micro: every fact weighs the same, the first study's convention) for LAMA, exact match of the
generated object (micro) in LAMA's generate mode, exact match for the QA probes, and accuracy
(`acc`) for the multiple-choice tasks and LAMBADA, as both reference studies report them.
`acc_norm` (length-normalised picks, lm-evaluation-harness's second number) stays available:
pass `choice_metric="acc_norm"` (the report's `--choice-metric acc_norm`). The rule reads the
metric names a result carries rather than a table of probe names, so a stored result of a
user's task file resolves the same way without its file. A probe that did not run, or whose
headline is not a number, is missing: it shows as None, never as zero, and averages are taken
over the probes present, with the missing ones listed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import mean
from typing import Any

from knowcomp.errors import KnowcompError
from knowcomp.probes.base import ProbeResult

CATEGORIES = (
    "world_knowledge",
    "common_reasoning",
    "language_understanding",
    "reading_comprehension",
)
DISPLAY_NAMES = {
    "world_knowledge": "World knowledge",
    "common_reasoning": "Common reasoning",
    "language_understanding": "Language understanding",
    "reading_comprehension": "Reading comprehension",
}
USER_CATEGORY = "custom"  # a user's task file that names no category
DISPLAY_NAMES[USER_CATEGORY] = "Custom (user tasks)"
SHORT_NAMES = {  # the second study's column headings
    "world_knowledge": "World",
    "common_reasoning": "Common",
    "language_understanding": "Language",
    "reading_comprehension": "Reading",
}

# The second study's nine tasks, grouped by category, and the categories it averages.
STUDY_TASKS = (
    "arc-challenge", "arc-easy", "sciq", "triviaqa", "webqs",  # world knowledge
    "piqa",  # common reasoning
    "hellaswag", "lambada", "winogrande",  # language understanding
)  # fmt: skip
STUDY_CATEGORIES = ("world_knowledge", "common_reasoning", "language_understanding")

# The headline is the first of these a result has (LAMA ranked, LAMA generated, QA, accuracy).
HEADLINE_ORDER = ("p@1_micro", "exact_match_micro", "exact_match", "acc")
CHOICE_METRICS = ("acc", "acc_norm")  # what `choice_metric` may be

Scores = Sequence[ProbeResult] | Mapping[str, float | None]


def check_category(value: object) -> str | None:
    """Why `value` cannot be a probe's category, or None if it can (one of `CATEGORIES`, or
    `custom` for a user task that names none)."""
    if value in (*CATEGORIES, USER_CATEGORY):
        return None
    return f"unknown category {value!r}; choose from {', '.join(CATEGORIES)} (or {USER_CATEGORY})"


def check_choice_metric(choice_metric: str) -> None:
    if choice_metric not in CHOICE_METRICS:
        raise KnowcompError(
            f"unknown choice metric {choice_metric!r}; choose from {', '.join(CHOICE_METRICS)}"
        )


def headline_name(metrics: Mapping[str, Any], *, choice_metric: str = "acc") -> str | None:
    """The name of the headline metric among `metrics` (see the module docstring): the first
    of `HEADLINE_ORDER` whose value is a number, `acc_norm` instead of `acc` when
    `choice_metric` asks for it and the probe has it; None if there is none."""
    check_choice_metric(choice_metric)
    order = HEADLINE_ORDER
    if choice_metric == "acc_norm":
        order = ("p@1_micro", "exact_match_micro", "exact_match", "acc_norm", "acc")
    return next((name for name in order if _number(metrics.get(name)) is not None), None)


def headline_metric(result: ProbeResult, *, choice_metric: str = "acc") -> str | None:
    """The name of `result`'s headline metric; None if it has none."""
    return headline_name(result.metrics, choice_metric=choice_metric)


def headline_score(result: ProbeResult, *, choice_metric: str = "acc") -> float | None:
    """The headline metric's value, or None where there is none or it is not a number."""
    name = headline_metric(result, choice_metric=choice_metric)
    return _number(result.metrics.get(name)) if name else None


def _number(value: Any) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class CategoryAverage:
    """The mean headline score of a category's present probes (None if none is present)."""

    category: str
    score: float | None
    present: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def name(self) -> str:
        return DISPLAY_NAMES.get(self.category, self.category)

    @property
    def short_name(self) -> str:
        return SHORT_NAMES.get(self.category, self.category)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Layout:
    """One row of the second study's table: tasks, category averages, overall average."""

    tasks: tuple[tuple[str, float | None], ...]  # (probe, headline score or None if missing)
    categories: tuple[CategoryAverage, ...]
    overall: float | None  # mean over the present tasks, each weighing the same
    metrics: dict[str, str]  # probe -> the metric its score is (present probes only)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(probe for probe, score in self.tasks if score is None)

    def columns(self) -> list[tuple[str, float | None]]:
        """Heading and value of every cell, in order: tasks, `World`..., `Average`."""
        return [*self.tasks, *((c.short_name, c.score) for c in self.categories),
                ("Average", self.overall)]  # fmt: skip


def _collect(
    results: Scores, choice_metric: str = "acc"
) -> tuple[dict[str, float | None], dict[str, str], dict[str, str]]:
    """Scores, metric names and categories by probe, from results or a {probe: score} map."""
    if isinstance(results, Mapping):
        scores = {probe: _number(value) for probe, value in results.items()}
        return scores, {}, {probe: category_of(probe) for probe in scores}
    scores, metrics, categories = {}, {}, {}
    for result in results:
        scores[result.probe] = headline_score(result, choice_metric=choice_metric)
        categories[result.probe] = result.category
        name = headline_metric(result, choice_metric=choice_metric)
        if name is not None and scores[result.probe] is not None:
            metrics[result.probe] = name
    return scores, metrics, categories


def category_of(probe: str) -> str:
    """A registered probe's category; a one-line error for an unknown name."""
    from knowcomp.probes.registry import PROBES, load_builtin_probes

    load_builtin_probes()
    if probe not in PROBES:
        raise KnowcompError(
            f"unknown probe '{probe}': its category is not known; pass its ProbeResult instead"
        )
    return PROBES[probe].category


def _layout(
    tasks: Sequence[str],
    categories: Sequence[str],
    scores: dict[str, float | None],
    metrics: dict[str, str],
    category: dict[str, str],
) -> Layout:
    row = tuple((probe, scores.get(probe)) for probe in tasks)
    averages = []
    for cat in categories:
        members = [(p, s) for p, s in row if category[p] == cat]
        present = tuple(p for p, s in members if s is not None)
        values = [s for _, s in members if s is not None]
        averages.append(CategoryAverage(
            cat, mean(values) if values else None, present,
            tuple(p for p, s in members if s is None),
        ))  # fmt: skip
    values = [s for _, s in row if s is not None]
    return Layout(row, tuple(averages), mean(values) if values else None,
                  {p: metrics[p] for p, _ in row if p in metrics})  # fmt: skip


def study_layout(
    results: Scores,
    tasks: Sequence[str] = STUDY_TASKS,
    categories: Sequence[str] = STUDY_CATEGORIES,
    *,
    choice_metric: str = "acc",
) -> Layout:
    """The second study's row for `results`: `tasks` in order (a probe not in `results` is None),
    the averages of `categories`, and the overall average of the present tasks."""
    scores, metrics, known = _collect(results, choice_metric)
    category = {probe: known.get(probe) or category_of(probe) for probe in tasks}
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise KnowcompError(f"unknown category {unknown[0]!r}; choose from {', '.join(CATEGORIES)}")
    return _layout(tasks, categories, scores, metrics, category)


def category_averages(results: Scores, *, choice_metric: str = "acc") -> Layout:
    """Every probe in `results`, grouped by category in `CATEGORIES` order, with the average of
    each category that has a probe, and the overall average."""
    scores, metrics, category = _collect(results, choice_metric)
    order = {c: i for i, c in enumerate(CATEGORIES)}
    tasks = sorted(scores, key=lambda p: order.get(category[p], len(order)))
    present = [c for c in CATEGORIES if c in category.values()]
    present += sorted({c for c in category.values() if c not in order})
    return _layout(tasks, present, scores, metrics, category)
