"""Compression and recovery in the layout of *Do Compressed LLMs Forget Knowledge?* (Hoang et
al., 2024), Tables 1 to 3.

Rows, per model: the uncompressed model, then each compression that has recovered trials,
followed by that compression with each recovery method. Columns: the tasks (the study's nine
where they ran, then any other probe), the World / Common / Language averages (and any other
category present), the overall average, and the recovered share of the overall average:

    recovered share = (recovered - compressed) / (uncompressed - compressed)

computed per seed where compression lost something (uncompressed > compressed), then averaged
over seeds: 100% means recovery won back everything compression lost, 0% nothing, a negative
share that recovery lost more (`knowcomp.analysis.intervals.recovered_share`, the one
definition `knowcomp recover` uses too). Scores are each probe's headline as
`knowcomp.probes.categories` defines it (the report's choice metric for multiple choice), in
percent, averaged over seeds.

A second table gives, per recovery method, its trainable parameters (and their share of the
model's), the training tokens and steps, the first and last training loss, and the seconds it
trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

from knowcomp.analysis.intervals import Undefined, recovered_share
from knowcomp.report.frame import BaselinePoint, Frame, Point
from knowcomp.report.stats import Cell, cell
from knowcomp.report.uncertainty import Intervals, share_interval

NONE = "–"
SHARE = "Recovered share"
NO_SHARE = "none: loss not significant"  # the loss's interval reaches zero: no ratio to show
TRAINING_COLUMNS = ("Trainable params", "% of model", "Tokens", "Steps", "First loss",
                    "Last loss", "Train s")  # fmt: skip


def _tasks(frame: Frame, models: Sequence[str]) -> list[str]:
    """The study's nine tasks that ran, in its order, then every other probe, in frame order."""
    from knowcomp.probes.categories import STUDY_TASKS

    ran = {
        p.probe for p in (*frame.baselines, *frame.points, *frame.recovered) if p.model in models
    }
    return [t for t in STUDY_TASKS if t in ran] + [
        p for p in frame.probes if p in ran and p not in STUDY_TASKS
    ]


def _categories(known: dict[str, str], tasks: Sequence[str]) -> list[str]:
    from knowcomp.probes.categories import CATEGORIES, STUDY_CATEGORIES

    present = {known[t] for t in tasks}
    order = [*STUDY_CATEGORIES, *(c for c in CATEGORIES if c not in STUDY_CATEGORIES)]
    return [c for c in order if c in present] + sorted(present - set(order))


def _layouts(
    points: Iterable[BaselinePoint | Point], tasks: Sequence[str], categories: Sequence[str],
    known: dict[str, str], choice_metric: str = "acc",
) -> dict[int, Any]:  # fmt: skip
    """Per seed, the row's `Layout` (a task that did not run is missing, never zero)."""
    from knowcomp.probes.base import ProbeResult
    from knowcomp.probes.categories import study_layout

    by_seed: dict[int, dict[str, ProbeResult]] = {}
    for p in points:
        results = by_seed.setdefault(p.seed, {})
        results[p.probe] = ProbeResult(p.probe, known[p.probe], p.metrics, {})
    layouts = {}
    for seed, results in by_seed.items():
        rows = [results.get(t) or ProbeResult(t, known[t], {}, {}) for t in tasks]
        layouts[seed] = study_layout(rows, tasks, categories, choice_metric=choice_metric)
    return layouts


def _cells(layouts: dict[int, Any], width: int) -> list[Cell | None]:
    """Tasks, category averages and overall average in percent, over seeds (`width` cells;
    all missing without a layout)."""
    values: list[list[float]] = [[] for _ in range(width)]
    for layout in layouts.values():
        for i, (_, score) in enumerate(layout.columns()):
            if score is not None:
                values[i].append(100 * score)
    return [cell(v) for v in values]


def _share(
    base: dict[int, Any],
    compressed: dict[int, Any],
    recovered: dict[int, Any],
    keys: tuple[dict, dict, dict] | None = None,
    intervals: Intervals | None = None,
):
    """The recovered share of the overall average, in percent: mean over seeds; for one seed
    with per-item records, with its stratified-bootstrap interval, or a note where the loss is
    too small for a share (`knowcomp.analysis.intervals.share_from_draws`)."""
    shares = []
    for seed, layout in recovered.items():
        if seed in base and seed in compressed:
            share = recovered_share(base[seed].overall, compressed[seed].overall, layout.overall)
            if share is not None:
                shares.append(100 * share)
    if len(recovered) != 1 or keys is None or intervals is None:
        return cell(shares)
    ((seed, layout),) = recovered.items()
    if seed not in base or seed not in compressed:
        return cell(shares)
    probes = [p for p, score in layout.tasks if score is not None
              and dict(base[seed].tasks).get(p) is not None
              and dict(compressed[seed].tasks).get(p) is not None]  # fmt: skip
    draws = []
    for probe in probes:
        trio = tuple(k.get((seed, probe)) for k in keys)
        draws.append(None if None in trio else intervals.draws(trio, probe))
    interval = share_interval(draws)
    if isinstance(interval, Undefined):
        return NO_SHARE
    return cell(shares, None if interval is None else (100 * interval[0], 100 * interval[1]))


def _keys(points: Iterable[BaselinePoint | Point]) -> dict[tuple[int, str], str]:
    return {(p.seed, p.probe): p.trial_key for p in points}


def recovery_tables(frame: Frame) -> list[Any]:
    """The recovery table and the training table; none without recovered trials."""
    from knowcomp.report.table import Table

    if not frame.recovered:
        return []
    from knowcomp.probes.categories import DISPLAY_NAMES, SHORT_NAMES

    models = [m for m in frame.models if any(p.model == m for p in frame.recovered)]
    tasks = _tasks(frame, models)
    known = {
        p.probe: p.category or "custom" for p in (*frame.baselines, *frame.points, *frame.recovered)
    }
    categories = _categories(known, tasks)
    averages = [SHORT_NAMES.get(c, DISPLAY_NAMES.get(c, c)) for c in categories]
    main = Table(
        "recovery",
        "Compression and recovery (the layout of Hoang et al., 2024, Tables 1-3)",
        ["Model", "Compression", "Recovery"],
        [*tasks, *averages, "Average", SHARE],
        note=(
            f"Headline score in percent ({frame.choice_metric} for multiple choice, accuracy "
            "for LAMBADA, exact match for QA, P@1 micro for LAMA), then the category averages "
            "and the average of all tasks. Recovered share = (recovered - compressed) / "
            "(uncompressed - compressed) on the average, in percent: 100 = all that "
            "compression lost is back; '–' where compression lost nothing. Means over seeds; "
            "for one seed, a stratified-bootstrap 95% interval, and no share where the loss's "
            "own interval reaches zero."
        ),
    )
    training = Table(
        "recovery_training",
        "Recovery methods: trainable parameters and training",
        ["Model", "Compression", "Recovery", "Settings"],
        list(TRAINING_COLUMNS),
        note=(
            "Trainable parameters of each method (the compressed model stays frozen); the "
            "training tokens, steps, first and last next-token loss and seconds, averaged over "
            "seeds. 'reused' marks an adapter loaded from an earlier run (its seconds are that "
            "run's)."
        ),
    )
    for model in models:
        choice = frame.choice_metric
        base = _layouts((b for b in frame.baselines if b.model == model), tasks, categories,
                        known, choice)  # fmt: skip
        width = len(main.probes) - 1  # every column but the recovered share
        main.rows.append(([model, "uncompressed", NONE], [*_cells(base, width), None]))
        recipes = list(dict.fromkeys(p.recipe for p in frame.recovered if p.model == model))
        for recipe in recipes:
            plain = _layouts((p for p in frame.points if p.model == model and p.recipe == recipe),
                             tasks, categories, known, choice)  # fmt: skip
            main.rows.append(([model, recipe, NONE], [*_cells(plain, width), None]))
            mine = [p for p in frame.recovered if p.model == model and p.recipe == recipe]
            for method in sorted(dict.fromkeys(p.method for p in mine), key=_method_order):
                points = [p for p in mine if p.method == method]
                rec = _layouts(points, tasks, categories, known, choice)
                keys = (_keys(b for b in frame.baselines if b.model == model),
                        _keys(p for p in frame.points if p.model == model and p.recipe == recipe),
                        _keys(points))  # fmt: skip
                share = _share(base, plain, rec, keys, frame.intervals)
                main.rows.append(([model, recipe, str(method)], [*_cells(rec, width), share]))
                training.rows.append(
                    ([model, recipe, str(method), _settings(points)], _training(frame, points))
                )
    return [t for t in (main, training) if t.rows]


def _method_order(label: str | None) -> tuple[int, str]:
    """LoRA, prompt tuning, prefix tuning, IDP (the registry's order), then anything else."""
    from knowcomp.recovery.settings import METHODS

    name = str(label).split(":")[0]
    return (METHODS.index(name) if name in METHODS else len(METHODS), str(label))


def _settings(points: list[Point]) -> str:
    info = points[0].recovery or {}
    return str(info.get("settings", ""))


def _training(frame: Frame, points: list[Point]) -> list[str | None]:
    """Trainable parameters, their share, and the training log, one trial per seed."""
    trials: dict[str, dict[str, Any]] = {}
    for p in points:
        trials.setdefault(p.trial_key, p.recovery or {})
    infos = list(trials.values())
    params = [i.get("trainable_params") for i in infos if i.get("trainable_params") is not None]
    model_params = [i.get("params_model") for i in infos if i.get("params_model")]
    logs = [i.get("log") or {} for i in infos]

    def mean(key: str) -> float | None:
        values = [log[key] for log in logs if isinstance(log.get(key), int | float)]
        return fmean(values) if values else None

    share = None
    if params and model_params:
        share = f"{100 * fmean(params) / fmean(model_params):.3f}"
    reused = any(i.get("reused") for i in infos)
    seconds = mean("seconds")
    return [
        f"{round(fmean(params)):,}" if params else None,
        share,
        _int(mean("tokens")),
        _int(mean("steps")),
        _float(mean("first_loss")),
        _float(mean("last_loss")),
        None if seconds is None else f"{seconds:.0f}" + (" (reused)" if reused else ""),
    ]


def _int(value: float | None) -> str | None:
    return None if value is None else f"{round(value):,}"


def _float(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"
