"""Pieces the papers' figures share: a canvas that records the values it plots, pooling over a
family's models, and curves and bars drawn with the report's uncertainty (error bars for the
SD over seeds or models, bands or bars for the 95% interval over items)."""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from knowcomp.report.plots import COLORS, OTHER_COLORS, Plot, _save
from knowcomp.report.stats import Arm, Cell, cell

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

    def curve(self, ax, panel: str, label: str, color: str, curve: Curve,
              marker: str = "o") -> None:  # fmt: skip
        """Draw `curve` on `ax` (`draw_curve`) and record each of its points under `panel`."""
        draw_curve(ax, label, color, curve, marker)
        for x, y in curve:
            self.record(panel, label, x, y)

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


def series_color(series: str, index: int) -> str:
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
    wrapped = [textwrap.fill(label, 18) for label in labels]  # long names would squash the axes
    ax.set_xticks(range(len(labels)), wrapped, rotation=30 if len(labels) > 4 else 0, fontsize=8)


def axes_style(ax, title: str, xlabel: str, ylabel: str = "Drop (points)") -> None:
    if "points" in ylabel:  # a difference: zero is the reference; a score keeps its own range
        ax.axhline(0, color="#999999", linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
