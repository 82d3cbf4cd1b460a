"""*Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024)'s figures: the average of the
nine tasks against compression (Fig. 1), against trainable parameters (Fig. 4) and against the
prompt size (Fig. 6), and the improvement per task (Fig. 7); see `report.paper_figures`."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path

from knowcomp.report.figure_kit import Canvas, Curve, axes_style, collect, draw_bars
from knowcomp.report.frame import Frame, Point
from knowcomp.report.plots import OTHER_COLORS, Plot
from knowcomp.report.stats import Arm, Cell, arms, cell, draws_interval
from knowcomp.report.uncertainty import mean_of_draws

HOANG = "hoang2024"
HOANG_CITE = "Hoang et al. (2024)"


def average_score(frame: Frame, points: Iterable, tasks: list[str]) -> Cell | None:
    """The mean headline score (percent) over `tasks`, per seed, then over seeds; one seed:
    with the stratified bootstrap's 95% interval. Seeds missing one of `tasks` are left out."""
    by_seed: dict[int, dict[str, object]] = {}
    for p in points:
        if p.probe in tasks:
            by_seed.setdefault(p.seed, {})[p.probe] = p
    kept = {seed: found for seed, found in by_seed.items() if set(found) == set(tasks)}
    if not kept:
        return None
    per_seed = [statistics.fmean(100 * found[t].value for t in tasks)  # type: ignore[attr-defined]
                for found in kept.values()]  # fmt: skip
    interval = None
    if len(kept) == 1:
        (found,) = kept.values()
        draws = [frame.intervals.score_draws(found[t].trial_key, t) for t in tasks]  # type: ignore[attr-defined]
        interval = draws_interval(mean_of_draws(draws))
    return cell(per_seed, interval)


def _tasks(frame: Frame) -> list[str]:
    from knowcomp.probes.categories import STUDY_TASKS

    return [t for t in STUDY_TASKS if t in frame.probes]


def _recovered_groups(frame: Frame) -> dict[tuple[str, str, str], list[Point]]:
    """Recovered points by (model, recipe, method)."""
    found: dict[tuple[str, str, str], list[Point]] = {}
    for p in frame.recovered:
        found.setdefault((p.model, p.recipe, str(p.method)), []).append(p)
    return found


def hoang_figures(frame: Frame, folder: Path) -> list[Plot]:
    """Every figure of the second study the data supports (none without its tasks)."""
    tasks = _tasks(frame)
    if not tasks:
        return []
    plots = []
    figure = _fig1(frame, tasks, folder)
    if figure is not None:
        plots.append(figure)
    recovered = _recovered_groups(frame)
    if recovered:
        plots.append(_fig4(frame, tasks, recovered, folder))
        idp = {k: v for k, v in recovered.items() if _prompt_size(k[2]) is not None
               and k[2].split(":")[0] == "idp"}  # fmt: skip
        if idp:
            plots.append(_fig6(frame, tasks, recovered, folder))
        plots.append(_fig7(frame, tasks, recovered, folder))
    return plots


def _fig1(frame: Frame, tasks: list[str], folder: Path) -> Plot | None:
    compressed = arms(frame)
    axes_of = {"bits": [a for a in compressed if a.compression.kind == "quant"
                        and a.compression.bits is not None],
               "sparsity": [a for a in compressed if a.compression.kind == "prune"
                            and a.compression.level is not None]}  # fmt: skip
    panels = {k: v for k, v in axes_of.items()
              if any(average_score(frame, a.points, tasks) is not None for a in v)}  # fmt: skip
    if not panels:  # nothing compressed ran every task of the average
        return None
    several = len({a.model for v in panels.values() for a in v}) > 1
    canvas = Canvas(f"{HOANG}-fig1", f"{HOANG_CITE}, Fig. 1: the average of the tasks against "
                    "compression", 1, len(panels))  # fmt: skip
    for ax, (axis, members) in zip(canvas.axes[0], panels.items(), strict=True):

        def series_of(arm: Arm) -> str:
            method = f"{arm.compression.method.split('(')[0]} {arm.compression.group}"
            return f"{arm.model}: {method}" if several else method

        x_of = (lambda a: float(a.compression.bits)) if axis == "bits" else sparsity
        curves = collect(members, series_of, x_of, lambda a: average_score(frame, a.points, tasks))
        for i, series in enumerate(sorted(curves)):
            canvas.curve(ax, axis, series, OTHER_COLORS[i % 7], curves[series])
        for model in dict.fromkeys(a.model for a in members):
            seeds = {seed for a in members if a.model == model for seed in a.seeds}
            mine = (b for b in frame.baselines if b.model == model and b.seed in seeds)
            base = average_score(frame, mine, tasks)  # the seeds the points ran with
            if base is not None:
                label = f"{model}: uncompressed" if several else "uncompressed"
                ax.axhline(base.mean, color="black", linestyle="--", linewidth=1, label=label)
                canvas.record(axis, label, "", base)
        if axis == "bits":
            ax.invert_xaxis()  # fewer bits: more compression, to the right
        axes_style(ax, "Quantization" if axis == "bits" else "Pruning",
                    "Bits per weight" if axis == "bits" else "Sparsity (%)",
                    f"Average of {len(tasks)} task(s) (%)")  # fmt: skip
    return canvas.finish(folder, f"The mean headline score of {', '.join(tasks)}; dashed: the "
                         "uncompressed model; bands: the stratified bootstrap's 95% interval "
                         "(one seed), bars: the SD over seeds.")  # fmt: skip


def _compressed_points(frame: Frame, model: str, recipe: str) -> list[Point]:
    return [p for p in frame.points if p.model == model and p.recipe == recipe]


def _trainable(points: list[Point]) -> float | None:
    values = [(p.recovery or {}).get("trainable_params") for p in points]
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.fmean(numbers) if numbers else None


def _fig4(frame: Frame, tasks: list[str], recovered: dict, folder: Path) -> Plot:
    compressions = list(dict.fromkeys((m, r) for m, r, _ in recovered))
    canvas = Canvas(f"{HOANG}-fig4", f"{HOANG_CITE}, Fig. 4: the average of the tasks against "
                    "trainable parameters", 1, len(compressions))  # fmt: skip
    for ax, (model, recipe) in zip(canvas.axes[0], compressions, strict=True):
        panel = f"{model}: {recipe}"
        methods = [k for k in recovered if k[:2] == (model, recipe)]
        for i, key in enumerate(methods):
            x, y = _trainable(recovered[key]), average_score(frame, recovered[key], tasks)
            if x is None or y is None or x <= 0:
                continue
            canvas.curve(ax, panel, key[2], OTHER_COLORS[i % 7], [(x, y)], "D")
        plain = average_score(frame, _compressed_points(frame, model, recipe), tasks)
        if plain is not None:
            ax.axhline(plain.mean, color="#d62728", linestyle=":", label="compressed")
            canvas.record(panel, "compressed", "", plain)
        base = average_score(frame, (b for b in frame.baselines if b.model == model), tasks)
        if base is not None:
            ax.axhline(base.mean, color="black", linestyle="--", label="uncompressed")
            canvas.record(panel, "uncompressed", "", base)
        ax.set_xscale("log")
        axes_style(ax, panel, "Trainable parameters", f"Average of {len(tasks)} task(s) (%)")
    return canvas.finish(folder, "Each recovery method's mean headline score over "
                         f"{', '.join(tasks)} against its trainable parameters (log scale); "
                         "dotted: the compressed model, dashed: the uncompressed one.")  # fmt: skip


def _prompt_size(method: str) -> int | None:
    """The soft prompt size of a prompt-based method, None otherwise: `prompt:tokens=50` is 50,
    and an IDP of prompts 50 and 100 (`idp:tokens=50+100`) is 150, all its prompts' tokens."""
    from knowcomp.errors import KnowcompError
    from knowcomp.recovery.settings import parse_method

    try:
        settings = parse_method(method)
    except KnowcompError:
        return None
    if method.split(":")[0] == "idp":
        return sum(settings.lengths)
    tokens = getattr(settings, "tokens", None)
    return tokens if isinstance(tokens, int) and method.split(":")[0] == "prompt" else None


def _fig6(frame: Frame, tasks: list[str], recovered: dict, folder: Path) -> Plot:
    sized = {k: v for k, v in recovered.items() if _prompt_size(k[2]) is not None}
    compressions = list(dict.fromkeys((m, r) for m, r, _ in sized))
    canvas = Canvas(f"{HOANG}-fig6", f"{HOANG_CITE}, Fig. 6: IDP against the prompt size", 1,
                    len(compressions))  # fmt: skip
    for ax, (model, recipe) in zip(canvas.axes[0], compressions, strict=True):
        panel = f"{model}: {recipe}"
        curves: dict[str, Curve] = {}
        for key, points in sized.items():
            if key[:2] != (model, recipe):
                continue
            name = key[2].split(":")[0]
            others = [part for part in key[2].split(":") if not part.startswith("tokens=")]
            label = name if name == "prompt" else ":".join(others)
            y = average_score(frame, points, tasks)
            if y is not None:
                curves.setdefault(label, []).append((float(_prompt_size(key[2]) or 0), y))
        for i, label in enumerate(sorted(curves)):
            curve = sorted(curves[label], key=lambda p: p[0])
            canvas.curve(ax, panel, label, OTHER_COLORS[i % 7], curve,
                         "o" if "idp" in label else "s")  # fmt: skip
        plain = average_score(frame, _compressed_points(frame, model, recipe), tasks)
        if plain is not None:
            ax.axhline(plain.mean, color="#d62728", linestyle=":", label="compressed")
            canvas.record(panel, "compressed", "", plain)
        axes_style(ax, panel, "Prompt length (tokens)", f"Average of {len(tasks)} task(s) (%)")
    return canvas.finish(folder, "IDP (and prompt tuning, where it ran) at each prompt length: "
                         f"the mean headline score over {', '.join(tasks)}.")  # fmt: skip


def improvement(frame: Frame, plain: list[Point], points: list[Point], task: str) -> Cell | None:
    """Recovered minus compressed score of one task, in points: per seed, then over seeds; one
    seed: the paired bootstrap's 95% interval on the items both scored."""
    before = {p.seed: p for p in plain if p.probe == task}
    after = {p.seed: p for p in points if p.probe == task}
    seeds = sorted(set(before) & set(after))
    if not seeds:
        return None
    values = [100 * (after[s].value - before[s].value) for s in seeds]
    interval = None
    if len(seeds) == 1:
        draws = frame.intervals.draws((before[seeds[0]].trial_key, after[seeds[0]].trial_key),
                                      task)  # fmt: skip
        interval = None if draws is None else draws_interval(draws[:, 1] - draws[:, 0])
    return cell(values, interval)


def _fig7(frame: Frame, tasks: list[str], recovered: dict, folder: Path) -> Plot:
    compressions = list(dict.fromkeys((m, r) for m, r, _ in recovered))
    canvas = Canvas(f"{HOANG}-fig7", f"{HOANG_CITE}, Fig. 7: improvement per task by recovery",
                    len(compressions), 1)  # fmt: skip
    for row, (model, recipe) in enumerate(compressions):
        ax = canvas.axes[row][0]
        panel = f"{model}: {recipe}"
        plain = _compressed_points(frame, model, recipe)
        methods = [k for k in recovered if k[:2] == (model, recipe)]
        width = 0.8 / max(len(methods), 1)
        for i, key in enumerate(methods):
            cells = [improvement(frame, plain, recovered[key], t) for t in tasks]
            shown = [c if c is not None else Cell(0.0, 0.0, 1) for c in cells]
            offset = (i - (len(methods) - 1) / 2) * width
            draw_bars(ax, tasks, shown, [OTHER_COLORS[i % 7]] * len(tasks), offset=offset,
                      width=width, legend=key[2])  # fmt: skip
            for task, c in zip(tasks, cells, strict=True):
                if c is not None:
                    canvas.record(panel, key[2], task, c)
        axes_style(ax, panel, "Task", "Recovered - compressed (points)")
    return canvas.finish(folder, "Each task's headline score after recovery minus before it "
                         "(the compressed model), in points; error bars: the paired "
                         "bootstrap's 95% interval (one seed) or the SD over seeds.")  # fmt: skip


def sparsity(arm: Arm) -> float | None:
    """The pruning level in percent."""
    return None if arm.compression.level is None else 100 * arm.compression.level
