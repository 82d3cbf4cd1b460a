"""Plots (PNG and SVG) in the manner of the study's Figs. 3 to 5, 9 to 11, and per-probe drops.

Every plot shows the drop in the headline score (baseline minus compressed, in percentage
points; higher is worse), averaged over the probes of one kind in each panel, with error bars
for the spread over seeds where there are several, and, for one seed, a band for the 95%
interval over items (the paired drop's for one probe, a stratified bootstrap's for an average
over probes; `report.uncertainty`). Panels of multiple-choice probes draw the
majority-class level: the drop that would leave the model no better than always answering the
most frequent label. Figures are drawn with matplotlib's object API on the Agg canvas, so no
global backend is switched and no window opens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from knowcomp.report.frame import PROBE_KINDS, Frame
from knowcomp.report.stats import Arm, Cell, arms, majority_drop

COLORS = {"overall": "#d62728", "attention": "#1f77b4", "feed_forward": "#2ca02c"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e")


@dataclass
class Plot:
    name: str  # file stem
    title: str
    caption: str
    png: Path
    svg: Path
    csv: Path | None = None  # the plotted values, where the figure writes them
    values: list[dict] = field(default_factory=list)  # one row per plotted point


@dataclass
class Series:
    label: str
    color: str | None
    arms: list[Arm]
    x: Callable[[Arm], float | None]
    marker: str = "o"


def draw_plots(frame: Frame, folder: Path) -> list[Plot]:
    """Every plot the data supports; one file pair per figure and model."""
    folder.mkdir(parents=True, exist_ok=True)
    all_arms = arms(frame)
    plots: list[Plot] = []
    slugs: set[str] = set()
    for model in frame.models:
        mine = [a for a in all_arms if a.model == model and a.drop() is not None]
        slug = base = _slug(model)
        count = 1
        while slug in slugs:
            count += 1
            slug = f"{base}-{count}"
        slugs.add(slug)
        group_series = _group_series(mine)
        if group_series:
            plots.append(_averaged(
                frame, model, group_series, folder, f"drop_vs_sparsity_{slug}",
                f"{model}: averaged drop against sparsity, per group (Figs. 3-5)",
                "Pruning level (%)",
                "Each group pruned at each level; drop of the headline score averaged over "
                "the probes of each kind.",
            ))  # fmt: skip
            plots.append(_per_probe(frame, model, group_series, folder, f"probe_drops_{slug}"))
        final_series = _final_series(mine)
        if final_series:
            plots.append(_averaged(
                frame, model, final_series, folder, f"final_layer_{slug}",
                f"{model}: final layer, structured vs unstructured (Figs. 8-10)",
                "Pruning level (%)",
                "The final (LM head) layer pruned unstructured (single weights) or structured "
                "(whole rows); drop averaged over the probes of each kind.",
            ))  # fmt: skip
        fraction_series = _fraction_series(mine)
        if fraction_series:
            plots.append(_averaged(
                frame, model, fraction_series, folder, f"drop_vs_fraction_{slug}",
                f"{model}: drop against the fraction of parameters compressed (Fig. 11)",
                "Parameters compressed (% of the model)",
                "x: the share of the model's parameters the compression changed: every weight "
                "of a quantized group (params_compressed / params_model), the weights "
                "the recipe zeroed in a group that is only pruned (weights already zero "
                "before are left out where the results file recorded them).",
            ))  # fmt: skip
    return plots


# -- which arms go in which figure ----------------------------------------------------------
def _level(arm: Arm) -> float | None:
    level = arm.compression.level
    return None if level is None else 100 * level


def _fraction(arm: Arm) -> float | None:
    fraction = arm.fraction
    return None if fraction is None else 100 * fraction


def _group_series(mine: list[Arm]) -> list[Series]:
    """Pruning only, one line per group (and method, when several): Figs. 3 to 5."""
    chosen = [a for a in mine if a.compression.kind == "prune" and a.compression.level is not None
              and a.compression.group != "final_layer"]  # fmt: skip
    several = len({a.compression.method for a in chosen}) > 1
    keys = list(dict.fromkeys((a.compression.group, a.compression.method) for a in chosen))
    keys.sort(key=lambda k: (_group_rank(k[0]), k))
    series = []
    for i, (group, method) in enumerate(keys):
        label = group + (f" ({method})" if several else "")
        members = [
            a for a in chosen if (a.compression.group, a.compression.method) == (group, method)
        ]
        series.append(Series(label, _color(group, i, several), members, _level))
    return series


def _final_series(mine: list[Arm]) -> list[Series]:
    """The final layer pruned: one line per method, structured in red, unstructured in blue."""
    chosen = [a for a in mine if a.compression.kind == "prune" and a.compression.level is not None
              and a.compression.group == "final_layer"]  # fmt: skip
    methods = sorted({a.compression.method for a in chosen})
    structured = {m: any(a.compression.structured for a in chosen if a.compression.method == m)
                  for m in methods}  # fmt: skip
    series = []
    for i, method in enumerate(methods):
        kind = "structured" if structured[method] else "unstructured"
        alone = sum(1 for m in methods if structured[m] == structured[method]) == 1
        color = (
            ("#d62728" if structured[method] else "#1f77b4")
            if alone
            else OTHER_COLORS[i % len(OTHER_COLORS)]
        )
        members = [a for a in chosen if a.compression.method == method]
        series.append(Series(f"{kind} ({method})", color, members, _level,
                             "s" if structured[method] else "o"))  # fmt: skip
    return series


def _fraction_series(mine: list[Arm]) -> list[Series]:
    """Every compression, one series per kind, group and method (methods named if several)."""
    chosen = [a for a in mine if a.fraction is not None]
    keys = list(dict.fromkeys(_fraction_key(a) for a in chosen))
    keys.sort(key=lambda k: (k[0], _group_rank(k[1]), k[1], k[2]))
    markers = {"prune": "o", "quant": "D", "prune+quant": "^"}
    series = []
    for i, key in enumerate(keys):
        kind, group, method = key
        members = [a for a in chosen if _fraction_key(a) == key]
        several = sum(1 for k in keys if k[:2] == (kind, group)) > 1
        color = OTHER_COLORS[i % len(OTHER_COLORS)] if several else COLORS.get(group)
        label = f"{kind} {group}" + (f" ({method})" if several else "")
        series.append(Series(label, color or OTHER_COLORS[i % len(OTHER_COLORS)], members,
                             _fraction, markers.get(kind, "v")))  # fmt: skip
    return series


def _fraction_key(arm: Arm) -> tuple[str, str, str]:
    c = arm.compression
    return (c.kind, c.group, c.method)


def _group_rank(group: str) -> int:
    order = list(COLORS)
    return order.index(group) if group in order else len(order)


def _color(group: str, index: int, several: bool) -> str:
    if not several and group in COLORS:
        return COLORS[group]
    return OTHER_COLORS[index % len(OTHER_COLORS)]


# -- drawing --------------------------------------------------------------------------------
def _figure(panels: int):
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _line(ax, series: Series, value: Callable[[Arm], Cell | None]) -> bool:
    points = []
    for arm in series.arms:
        x, y = series.x(arm), value(arm)
        if x is not None and y is not None:
            points.append((x, y))
    if not points:
        return False
    points.sort(key=lambda p: p[0])
    xs = [p[0] for p in points]
    ys = [p[1].mean for p in points]
    errs = [p[1].std for p in points]
    # a line only joins distinct x values (levels pruned then quantized share one fraction)
    joined = len(set(xs)) == len(xs)
    kwargs = dict(label=series.label, color=series.color, marker=series.marker, markersize=4,
                  linewidth=1.5 if joined else 0)  # fmt: skip
    if any(e > 0 for e in errs):
        ax.errorbar(xs, ys, yerr=errs, capsize=3, **kwargs)
    else:
        ax.plot(xs, ys, **kwargs)
    banded = [(x, c) for x, c in points if c.has_interval]
    if banded:  # the 95% interval over items, one seed: a band (bars where x repeats)
        lows = [c.low for _, c in banded]
        highs = [c.high for _, c in banded]
        bx = [x for x, _ in banded]
        if joined and len(banded) > 1:
            ax.fill_between(bx, lows, highs, color=series.color, alpha=0.15, linewidth=0)
        else:
            ys_b = [c.mean for _, c in banded]
            ax.errorbar(bx, ys_b, yerr=[[y - lo for y, lo in zip(ys_b, lows, strict=True)],
                                        [hi - y for y, hi in zip(ys_b, highs, strict=True)]],
                        fmt="none", ecolor=series.color, alpha=0.5, capsize=2)  # fmt: skip
    return True


def _decorate(ax, title: str, xlabel: str, majority: float | None) -> None:
    ax.axhline(0, color="#999999", linewidth=0.8)
    if majority is not None:
        ax.axhline(majority, color="black", linestyle="--", linewidth=1,
                   label="majority-class level")  # fmt: skip
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Drop (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _averaged(frame: Frame, model: str, series: list[Series], folder: Path, name: str,
              title: str, xlabel: str, caption: str) -> Plot:  # fmt: skip
    members = [a for s in series for a in s.arms]
    kinds = [k for k in PROBE_KINDS if any(p.kind == k for a in members for p in a.points)]
    fig, axes = _figure(len(kinds))
    for ax, kind in zip(axes, kinds, strict=True):
        for s in series:
            _line(ax, s, lambda arm, kind=kind: arm.drop(kind=kind))
        plotted = {p.probe for a in members for p in a.points if p.kind == kind}
        probes = [p for p in frame.probes if p in plotted]
        majority = majority_drop(frame, model, probes) if kind == "mc" else None
        _decorate(ax, f"{PROBE_KINDS[kind]}: {', '.join(probes)}", xlabel, majority)
    fig.suptitle(title, fontsize=11)
    return _save(fig, folder, name, title, caption)


def _per_probe(frame: Frame, model: str, series: list[Series], folder: Path, name: str) -> Plot:
    members = [a for s in series for a in s.arms]
    probes = [p for p in frame.probes if any(p in a.probes for a in members)]
    fig, axes = _figure(len(probes))
    for ax, probe in zip(axes, probes, strict=True):
        for s in series:
            _line(ax, s, lambda arm, probe=probe: arm.drop_of(probe))
        _decorate(ax, probe, "Pruning level (%)", majority_drop(frame, model, [probe]))
    title = f"{model}: drop per probe against sparsity"
    fig.suptitle(title, fontsize=11)
    caption = ("Drop of each probe's headline score; band: its 95% paired interval over items; "
               "dashed: the majority-class level (multiple-choice probes).")  # fmt: skip
    return _save(fig, folder, name, title, caption)


def _save(fig, folder: Path, name: str, title: str, caption: str) -> Plot:
    from matplotlib import rc_context

    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    with rc_context({"svg.hashsalt": "knowcomp", "svg.fonttype": "none"}):
        fig.savefig(png, dpi=110, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None, "Creator": None})
    return Plot(name, title, caption, png, svg)


def _slug(label: str) -> str:
    """A file-name part for a model label: a local path becomes its folder name."""
    name, _, setting = label.partition(" [")
    if name.startswith(("/", ".", "~")):
        name = Path(name).name
    text = f"{name} {setting}" if setting else name
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "model"
