"""The papers' figures, named after them (`namburi2023-fig6.png`, `hoang2024-fig1.png`).

*The Cost of Compression* (Namburi et al., 2023) pools the models of a family in each figure;
so do these (the mean over the family's models, with the spread between them as error bars
where there are several, else the one model's own uncertainty):

- Figs. 3-5: global pruning, drop against the pruning level per group, one figure per family
  (encoder, encoder-decoder, decoder, the order in which the paper lists them);
- Fig. 6: global quantization (GQ), the drop per group; Fig. 7: prune-then-quantize (GPQ),
  the drop against the pruning level per group; one row of panels per family;
- Figs. 15-18: the same per dataset: GQ on LAMA (15) and on the other tasks (16), GPQ on LAMA
  (17) and on the other tasks (18);
- Figs. 26-28: the final layer pruned structured vs unstructured, per dataset, one figure per
  family.

*Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024), scores averaged over the nine
tasks that ran (`knowcomp.probes.categories.STUDY_TASKS`):

- Fig. 1: the average against bits (quantization) and against sparsity (pruning);
- Fig. 4: the average against the trainable parameters of each recovery method;
- Fig. 6: IDP (and prompt tuning, where it ran) against the prompt size;
- Fig. 7: each task's improvement by recovery (recovered minus compressed score).

Error bars and bands are the report's own uncertainty (`report.stats`): the SD over seeds
where several ran, else the 95% interval over items (a paired interval for one probe's drop,
a stratified bootstrap for an average over probes or an improvement). A figure is written only
where its data ran; each writes its plotted values to `NAME.csv` beside it. The figure numbers
are the papers'; what each figure holds is knowcomp's reading of them.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from knowcomp.report.frame import PROBE_KINDS, STRUCTURED_METHODS, Frame, Point
from knowcomp.report.paper_tables import FAMILY_NAMES, FAMILY_TABLES, PAPER_GROUPS
from knowcomp.report.plots import COLORS, OTHER_COLORS, Plot, _save
from knowcomp.report.stats import Arm, Cell, arms, cell, draws_interval
from knowcomp.report.uncertainty import mean_of_draws

FAMILIES = tuple(FAMILY_TABLES)  # the paper's order
PRUNING_FIGURES = dict(zip(FAMILIES, (3, 4, 5), strict=True))
FINAL_FIGURES = dict(zip(FAMILIES, (26, 27, 28), strict=True))
NAMBURI = "namburi2023"
HOANG = "hoang2024"
NAMBURI_CITE = "Namburi et al. (2023)"
HOANG_CITE = "Hoang et al. (2024)"
SERIES_COLORS = {"Overall": COLORS["overall"], "Att": COLORS["attention"],
                 "FF": COLORS["feed_forward"]}  # fmt: skip

Curve = list[tuple[float, Cell]]


@dataclass
class Canvas:
    """One figure being drawn, and the values it plotted (for its CSV and for tests)."""

    name: str
    title: str
    rows: int
    cols: int
    values: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        from matplotlib.figure import Figure

        width = max(4.4 * self.cols, 7.0)  # room for the title over one panel
        self.fig = Figure(figsize=(width, 3.4 * self.rows + 0.6), layout="constrained")
        self.axes = self.fig.subplots(self.rows, self.cols, squeeze=False)

    def record(self, panel: str, series: str, x: float | str, y: Cell) -> None:
        self.values.append({
            "panel": panel, "series": series, "x": x, "y": y.mean,
            "sd": y.std if y.n > 1 else None, "n": y.n, "low": y.low, "high": y.high,
        })  # fmt: skip

    def finish(self, folder: Path, caption: str) -> Plot:
        for ax in self.axes.ravel():
            if not ax.has_data():
                ax.set_visible(False)
        self.fig.suptitle(self.title, fontsize=10)
        plot = _save(self.fig, folder, self.name, self.title, caption)
        plot.values = self.values
        plot.csv = folder / f"{self.name}.csv"
        with plot.csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["panel", "series", "x", "y", "sd", "n", "low",
                                             "high"], lineterminator="\n")  # fmt: skip
            writer.writeheader()
            for row in self.values:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return plot


def draw_paper_figures(frame: Frame, folder: Path) -> list[Plot]:
    """Every figure of both papers that the data supports."""
    folder.mkdir(parents=True, exist_ok=True)
    all_arms = [a for a in arms(frame) if a.drop() is not None]
    plots = _namburi(frame, all_arms, folder)
    plots += _hoang(frame, folder)
    return plots


# -- pooling and drawing ----------------------------------------------------------------------
def pooled(cells: list[Cell]) -> Cell:
    """One model's cell as it is; several models' means with the SD between them (n models)."""
    return cells[0] if len(cells) == 1 else cell(c.mean for c in cells)  # type: ignore[return-value]


def collect(members: Iterable[Arm], series_of: Callable[[Arm], str | None],
            x_of: Callable[[Arm], float | None],
            value_of: Callable[[Arm], Cell | None]) -> dict[str, Curve]:  # fmt: skip
    """Per series, (x, pooled cell) sorted by x: the arms of one x pooled over models."""
    found: dict[str, dict[float, list[Cell]]] = {}
    for arm in members:
        series, x, value = series_of(arm), x_of(arm), value_of(arm)
        if series is not None and x is not None and value is not None:
            found.setdefault(series, {}).setdefault(x, []).append(value)
    return {s: sorted(((x, pooled(c)) for x, c in xs.items()), key=lambda p: p[0])
            for s, xs in found.items()}  # fmt: skip


def _color(series: str, index: int) -> str:
    base = series.split(" ")[0].split("+")[0]
    return SERIES_COLORS.get(series, SERIES_COLORS.get(base, OTHER_COLORS[index % 7]))


def draw_curve(ax, label: str, color: str, curve: Curve, marker: str = "o") -> None:
    """A line with error bars (SD over seeds or models) or a band (95% interval over items)."""
    xs = [x for x, _ in curve]
    ys = [c.mean for _, c in curve]
    sds = [c.std for _, c in curve]
    style = dict(label=label, color=color, marker=marker, markersize=4, linewidth=1.5)
    if any(sd > 0 for sd in sds):
        ax.errorbar(xs, ys, yerr=sds, capsize=3, **style)
    else:
        ax.plot(xs, ys, **style)
    banded = [(x, c) for x, c in curve if c.has_interval]
    if len(banded) > 1:
        lows, highs = [c.low for _, c in banded], [c.high for _, c in banded]
        ax.fill_between([x for x, _ in banded], lows, highs, color=color, alpha=0.15, linewidth=0)
    elif banded:
        ((x, c),) = banded
        ax.errorbar([x], [c.mean], yerr=[[c.mean - c.low], [c.high - c.mean]], fmt="none",
                    ecolor=color, alpha=0.6, capsize=3)  # fmt: skip


def draw_bars(ax, labels: list[str], cells: list[Cell], colors: list[str], *, offset: float = 0.0,
              width: float = 0.8, legend: str | None = None) -> None:  # fmt: skip
    """Bars with error bars: the SD over seeds or models, or the 95% interval over items."""
    xs = [i + offset for i in range(len(cells))]
    lows = [c.mean - (c.low if c.has_interval else c.mean - c.std) for c in cells]
    highs = [(c.high if c.has_interval else c.mean + c.std) - c.mean for c in cells]
    ax.bar(xs, [c.mean for c in cells], width=width, color=colors, label=legend,
           yerr=[lows, highs], capsize=3, ecolor="#333333")  # fmt: skip
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, fontsize=8)


def _axes_style(ax, title: str, xlabel: str, ylabel: str = "Drop (points)") -> None:
    if "points" in ylabel:  # a difference: zero is the reference; a score keeps its own range
        ax.axhline(0, color="#999999", linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


# -- The Cost of Compression ------------------------------------------------------------------
def _group_label(arm: Arm) -> str:
    return PAPER_GROUPS.get(arm.compression.group, (3, arm.compression.group))[1]


def _labeler(members: list[Arm]) -> Callable[[Arm], str]:
    """A series per group under the paper's name, split by method where several methods
    compressed one group (`Overall [weight_only(bits=4, ...)]`), so that only models pool."""
    methods: dict[str, set[str]] = {}
    for arm in members:
        methods.setdefault(_group_label(arm), set()).add(arm.compression.method)

    def label(arm: Arm) -> str:
        group = _group_label(arm)
        return group if len(methods[group]) == 1 else f"{group} [{arm.compression.method}]"

    return label


def _group_rank(label: str) -> tuple[int, str]:
    ranks = {name: rank for rank, name in PAPER_GROUPS.values()}
    return (ranks.get(label.split(" [")[0], 3), label)


def _level(arm: Arm) -> float | None:
    return None if arm.compression.level is None else 100 * arm.compression.level


def _families(frame: Frame, members: list[Arm]) -> dict[str, list[Arm]]:
    """The arms of each family that has some, in the paper's order."""
    found: dict[str, list[Arm]] = {}
    for arm in members:
        found.setdefault(frame.families.get(arm.model, "unknown"), []).append(arm)
    order = [f for f in FAMILIES if f in found] + sorted(set(found) - set(FAMILIES))
    return {f: found[f] for f in order}


def _kinds(members: list[Arm]) -> list[str]:
    return [k for k in PROBE_KINDS if any(p.kind == k for a in members for p in a.points)]


def _probes(frame: Frame, members: list[Arm], kinds: Iterable[str]) -> list[str]:
    ran = {p.probe for a in members for p in a.points if p.kind in set(kinds)}
    return [p for p in frame.probes if p in ran]


def _models_note(frame: Frame, members: list[Arm]) -> str:
    models = list(dict.fromkeys(a.model for a in members))
    return f"{len(models)} model(s): {', '.join(models)}"


def _namburi(frame: Frame, all_arms: list[Arm], folder: Path) -> list[Plot]:
    plots = []
    pruned = [a for a in all_arms if a.compression.kind == "prune" and a.compression.level
              is not None and a.compression.group != "final_layer"]  # fmt: skip
    for family, members in _families(frame, pruned).items():
        if family in PRUNING_FIGURES:
            plots.append(_pruning_figure(frame, family, members, folder))
    quantized = [a for a in all_arms if a.compression.kind == "quant"]
    prune_quant = [a for a in all_arms if a.compression.kind == "prune+quant"
                   and a.compression.level is not None]  # fmt: skip
    if quantized:
        plots.append(_gq_figure(frame, quantized, folder))
    if prune_quant:
        plots.append(_gpq_figure(frame, prune_quant, folder))
    for number, members, lama in ((15, quantized, True), (16, quantized, False),
                                  (17, prune_quant, True), (18, prune_quant, False)):  # fmt: skip
        kinds = ["lama"] if lama else [k for k in PROBE_KINDS if k != "lama"]
        if _probes(frame, members, kinds):
            plots.append(_per_dataset(frame, number, members, kinds, folder))
    final = [a for a in all_arms if a.compression.kind == "prune" and a.compression.level
             is not None and a.compression.group == "final_layer"]  # fmt: skip
    for family, members in _families(frame, final).items():
        if family in FINAL_FIGURES:
            plots.append(_final_figure(frame, family, members, folder))
    return plots


def _pruning_figure(frame: Frame, family: str, members: list[Arm], folder: Path) -> Plot:
    number = PRUNING_FIGURES[family]
    kinds = _kinds(members)
    canvas = Canvas(f"{NAMBURI}-fig{number}", f"{NAMBURI_CITE}, Fig. {number}: global pruning, "
                    f"{FAMILY_NAMES[family]}", 1, len(kinds))  # fmt: skip
    for ax, kind in zip(canvas.axes[0], kinds, strict=True):
        curves = collect(members, _labeler(members), _level, lambda a, k=kind: a.drop(kind=k))
        for i, series in enumerate(sorted(curves, key=_group_rank)):
            draw_curve(ax, series, _color(series, i), curves[series])
            for x, y in curves[series]:
                canvas.record(kind, series, x, y)
        _axes_style(ax, f"{PROBE_KINDS[kind]}", "Pruning level (%)")
    return canvas.finish(folder, "L1 global pruning of each group; the drop of the headline "
                         "score averaged over the probes of each kind, pooled over the family's "
                         f"{_models_note(frame, members)}.")  # fmt: skip


def _gq_figure(frame: Frame, members: list[Arm], folder: Path) -> Plot:
    families = _families(frame, members)
    kinds = _kinds(members)
    canvas = Canvas(f"{NAMBURI}-fig6", f"{NAMBURI_CITE}, Fig. 6: global quantization (GQ)",
                    len(families), len(kinds))  # fmt: skip
    for row, (family, mine) in enumerate(families.items()):
        for ax, kind in zip(canvas.axes[row], kinds, strict=True):
            curves = collect(mine, _labeler(members), lambda a: 0.0,
                             lambda a, k=kind: a.drop(kind=k))  # fmt: skip
            labels = sorted(curves, key=_group_rank)
            if labels:
                cells = [curves[s][0][1] for s in labels]
                draw_bars(ax, labels, cells, [_color(s, i) for i, s in enumerate(labels)])
                for s, c in zip(labels, cells, strict=True):
                    canvas.record(f"{family} {kind}", s, "GQ", c)
            _axes_style(ax, f"{FAMILY_NAMES.get(family, family)}: {PROBE_KINDS[kind]}", "Group")
    caption = ("Each group quantized (dynamic int8 unless the recipe says otherwise); the drop "
               "averaged over the probes of each kind, pooled over each family's models "
               f"({_models_note(frame, members)}).")  # fmt: skip
    return canvas.finish(folder, caption)


def _gpq_figure(frame: Frame, members: list[Arm], folder: Path) -> Plot:
    families = _families(frame, members)
    kinds = _kinds(members)
    canvas = Canvas(f"{NAMBURI}-fig7", f"{NAMBURI_CITE}, Fig. 7: prune-then-quantize (GPQ)",
                    len(families), len(kinds))  # fmt: skip
    for row, (family, mine) in enumerate(families.items()):
        for ax, kind in zip(canvas.axes[row], kinds, strict=True):
            curves = collect(mine, _labeler(members), _level, lambda a, k=kind: a.drop(kind=k))
            for i, series in enumerate(sorted(curves, key=_group_rank)):
                draw_curve(ax, series, _color(series, i), curves[series], "^")
                for x, y in curves[series]:
                    canvas.record(f"{family} {kind}", series, x, y)
            _axes_style(ax, f"{FAMILY_NAMES.get(family, family)}: {PROBE_KINDS[kind]}",
                        "Pruning level before quantization (%)")  # fmt: skip
    return canvas.finish(folder, "Each group pruned (L1) at each level, then quantized; the "
                         "drop averaged over the probes of each kind, pooled over each family's "
                         f"models ({_models_note(frame, members)}).")  # fmt: skip


def _per_dataset(frame: Frame, number: int, members: list[Arm], kinds: list[str],
                 folder: Path) -> Plot:  # fmt: skip
    families = _families(frame, members)
    probes = _probes(frame, members, kinds)
    quant = members[0].compression.kind == "quant"
    what = "GQ" if quant else "GPQ"
    suite = "LAMA" if kinds == ["lama"] else "the other tasks"
    canvas = Canvas(f"{NAMBURI}-fig{number}", f"{NAMBURI_CITE}, Fig. {number}: {what} per "
                    f"dataset, {suite}", len(families), len(probes))  # fmt: skip
    for row, (family, mine) in enumerate(families.items()):
        for ax, probe in zip(canvas.axes[row], probes, strict=True):
            x_of = (lambda a: 0.0) if quant else _level
            curves = collect(mine, _labeler(members), x_of, lambda a, p=probe: a.drop_of(p))
            labels = sorted(curves, key=_group_rank)
            if quant and labels:
                cells = [curves[s][0][1] for s in labels]
                draw_bars(ax, labels, cells, [_color(s, i) for i, s in enumerate(labels)])
                for s, c in zip(labels, cells, strict=True):
                    canvas.record(f"{family} {probe}", s, "GQ", c)
            for i, series in enumerate(labels if not quant else []):
                draw_curve(ax, series, _color(series, i), curves[series], "^")
                for x, y in curves[series]:
                    canvas.record(f"{family} {probe}", series, x, y)
            _axes_style(ax, f"{FAMILY_NAMES.get(family, family)}: {probe}",
                        "Group" if quant else "Pruning level before quantization (%)")  # fmt: skip
    caption = (f"The drop of each dataset's headline score, pooled over each family's models "
               f"({_models_note(frame, members)}); bars: the SD between seeds or models, or the "
               "paired 95% interval over items.")  # fmt: skip
    return canvas.finish(folder, caption)


def _final_figure(frame: Frame, family: str, members: list[Arm], folder: Path) -> Plot:
    number = FINAL_FIGURES[family]
    probes = _probes(frame, members, PROBE_KINDS)
    canvas = Canvas(f"{NAMBURI}-fig{number}", f"{NAMBURI_CITE}, Fig. {number}: final layer per "
                    f"dataset, {FAMILY_NAMES[family]}", 1, len(probes))  # fmt: skip

    def series_of(arm: Arm) -> str:
        structured = arm.compression.prune_method in STRUCTURED_METHODS
        return f"{'structured' if structured else 'unstructured'} ({arm.compression.method})"

    for ax, probe in zip(canvas.axes[0], probes, strict=True):
        curves = collect(members, series_of, _level, lambda a, p=probe: a.drop_of(p))
        for i, series in enumerate(sorted(curves)):
            structured = series.startswith("structured")
            color = "#d62728" if structured else "#1f77b4"
            draw_curve(ax, series, color if len(curves) <= 2 else OTHER_COLORS[i % 7],
                       curves[series], "s" if structured else "o")  # fmt: skip
            for x, y in curves[series]:
                canvas.record(probe, series, x, y)
        _axes_style(ax, probe, "Pruning level (%)")
    return canvas.finish(folder, "The final (LM head) layer pruned unstructured (single weights) "
                         "or structured (whole rows); the drop of each dataset's headline score, "
                         f"pooled over the family's {_models_note(frame, members)}.")  # fmt: skip


# -- Do Compressed LLMs Forget Knowledge? ---------------------------------------------------
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


def _hoang(frame: Frame, folder: Path) -> list[Plot]:
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

        x_of = (lambda a: float(a.compression.bits)) if axis == "bits" else _level
        curves = collect(members, series_of, x_of, lambda a: average_score(frame, a.points, tasks))
        for i, series in enumerate(sorted(curves)):
            draw_curve(ax, series, OTHER_COLORS[i % 7], curves[series])
            for x, y in curves[series]:
                canvas.record(axis, series, x, y)
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
        _axes_style(ax, "Quantization" if axis == "bits" else "Pruning",
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
            draw_curve(ax, key[2], OTHER_COLORS[i % 7], [(x, y)], "D")
            canvas.record(panel, key[2], x, y)
        plain = average_score(frame, _compressed_points(frame, model, recipe), tasks)
        if plain is not None:
            ax.axhline(plain.mean, color="#d62728", linestyle=":", label="compressed")
            canvas.record(panel, "compressed", "", plain)
        base = average_score(frame, (b for b in frame.baselines if b.model == model), tasks)
        if base is not None:
            ax.axhline(base.mean, color="black", linestyle="--", label="uncompressed")
            canvas.record(panel, "uncompressed", "", base)
        ax.set_xscale("log")
        _axes_style(ax, panel, "Trainable parameters", f"Average of {len(tasks)} task(s) (%)")
    return canvas.finish(folder, "Each recovery method's mean headline score over "
                         f"{', '.join(tasks)} against its trainable parameters (log scale); "
                         "dotted: the compressed model, dashed: the uncompressed one.")  # fmt: skip


def _prompt_size(method: str) -> int | None:
    """The soft prompt length of a prompt-based method (`idp:tokens=50`), None otherwise."""
    from knowcomp.errors import KnowcompError
    from knowcomp.recovery.settings import parse_method

    try:
        tokens = getattr(parse_method(method), "tokens", None)
    except KnowcompError:
        return None
    return tokens if isinstance(tokens, int) and method.split(":")[0] in ("idp", "prompt") else None


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
            draw_curve(ax, label, OTHER_COLORS[i % 7], curve, "o" if "idp" in label else "s")
            for x, y in curve:
                canvas.record(panel, label, x, y)
        plain = average_score(frame, _compressed_points(frame, model, recipe), tasks)
        if plain is not None:
            ax.axhline(plain.mean, color="#d62728", linestyle=":", label="compressed")
            canvas.record(panel, "compressed", "", plain)
        _axes_style(ax, panel, "Prompt length (tokens)", f"Average of {len(tasks)} task(s) (%)")
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
        _axes_style(ax, panel, "Task", "Recovered - compressed (points)")
    return canvas.finish(folder, "Each task's headline score after recovery minus before it "
                         "(the compressed model), in points; error bars: the paired "
                         "bootstrap's 95% interval (one seed) or the SD over seeds.")  # fmt: skip
