"""*The Cost of Compression* (Namburi et al., 2023)'s figures, a family's models pooled as the
paper pools them (see `report.paper_figures`): Figs. 3-5, 6, 7, 8-10, 11, 15-18 and 26-28."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from knowcomp.report.figure_kit import (
    Canvas,
    axes_style,
    collect,
    draw_bars,
    series_color,
)
from knowcomp.report.frame import PROBE_KINDS, STRUCTURED_METHODS, Frame
from knowcomp.report.paper_tables import FAMILY_NAMES, FAMILY_TABLES, PAPER_GROUPS
from knowcomp.report.plots import OTHER_COLORS, Plot
from knowcomp.report.stats import Arm

FAMILIES = tuple(FAMILY_TABLES)  # the paper's order
PRUNING_FIGURES = dict(zip(FAMILIES, (3, 4, 5), strict=True))
FINAL_FIGURES = dict(zip(FAMILIES, (26, 27, 28), strict=True))
FINAL_AVERAGED = dict(zip(FAMILIES, (8, 9, 10), strict=True))
KIND_MARKERS = {"prune": "o", "quant": "D", "prune+quant": "^"}
NAMBURI = "namburi2023"
NAMBURI_CITE = "Namburi et al. (2023)"


def _group_label(arm: Arm) -> str:
    return PAPER_GROUPS.get(arm.compression.group, (3, arm.compression.group))[1]


def _labeler(members: list[Arm]) -> Callable[[Arm], str]:
    """A series per group under the paper's name, split by method where several methods
    compressed one group (`Overall [gptq bits=3]`, naming only what differs between them), so
    that only models pool."""
    methods: dict[str, set[str]] = {}
    for arm in members:
        methods.setdefault(_group_label(arm), set()).add(arm.compression.method)
    short = {group: method_labels(found) for group, found in methods.items()}

    def label(arm: Arm) -> str:
        group = _group_label(arm)
        if len(methods[group]) == 1:
            return group
        return f"{group} [{short[group][arm.compression.method]}]"

    return label


def _parts(method: str) -> tuple[str, dict[str, str]]:
    """`gptq(bits=3, symmetric=True)` -> ("gptq", {"bits": "3", "symmetric": "True"})."""
    name, _, rest = method.partition("(")
    options = re.split(r",\s*(?=\w+=)", rest.rstrip(")")) if rest.rstrip(")") else []
    return name, dict(option.split("=", 1) for option in options if "=" in option)


def method_labels(methods: Iterable[str]) -> dict[str, str]:
    """Each method's name with only the options that differ between `methods`:
    {"gptq(bits=3, block_size=128)": "gptq bits=3", "gptq(bits=8, ...)": "gptq bits=8"}."""
    parsed = {m: _parts(m) for m in methods}
    keys = {k for _, options in parsed.values() for k in options}
    varying = sorted(k for k in keys if len({o.get(k) for _, o in parsed.values()}) > 1)
    labels = {m: " ".join([name, *(f"{k}={o[k]}" for k in varying if k in o)])
              for m, (name, o) in parsed.items()}  # fmt: skip
    if len(set(labels.values())) < len(labels):  # unparsable methods: keep them whole
        return {m: m for m in parsed}
    return labels


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


def namburi_figures(frame: Frame, all_arms: list[Arm], folder: Path) -> list[Plot]:
    """Every figure of the first study the data supports."""
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
        if family in FINAL_AVERAGED:
            plots.append(_final_averaged(frame, family, members, folder))
        if family in FINAL_FIGURES:
            plots.append(_final_figure(frame, family, members, folder))
    fractions = [a for a in all_arms if a.fraction is not None]
    if fractions:
        plots.append(_fraction_figure(frame, fractions, folder))
    return sorted(plots, key=lambda p: int(p.name.rsplit("fig", 1)[1]))


def _pruning_figure(frame: Frame, family: str, members: list[Arm], folder: Path) -> Plot:
    number = PRUNING_FIGURES[family]
    kinds = _kinds(members)
    canvas = Canvas(f"{NAMBURI}-fig{number}", f"{NAMBURI_CITE}, Fig. {number}: global pruning, "
                    f"{FAMILY_NAMES[family]}", 1, len(kinds))  # fmt: skip
    for ax, kind in zip(canvas.axes[0], kinds, strict=True):
        curves = collect(members, _labeler(members), _level, lambda a, k=kind: a.drop(kind=k))
        for i, series in enumerate(sorted(curves, key=_group_rank)):
            canvas.curve(ax, kind, series, series_color(series, i), curves[series])
        axes_style(ax, f"{PROBE_KINDS[kind]}", "Pruning level (%)")
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
                draw_bars(ax, labels, cells, [series_color(s, i) for i, s in enumerate(labels)])
                for s, c in zip(labels, cells, strict=True):
                    canvas.record(f"{family} {kind}", s, "GQ", c)
            axes_style(ax, f"{FAMILY_NAMES.get(family, family)}: {PROBE_KINDS[kind]}", "Group")
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
                canvas.curve(ax, f"{family} {kind}", series, series_color(series, i),
                             curves[series], "^")  # fmt: skip
            axes_style(ax, f"{FAMILY_NAMES.get(family, family)}: {PROBE_KINDS[kind]}",
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
                draw_bars(ax, labels, cells, [series_color(s, i) for i, s in enumerate(labels)])
                for s, c in zip(labels, cells, strict=True):
                    canvas.record(f"{family} {probe}", s, "GQ", c)
            for i, series in enumerate(labels if not quant else []):
                canvas.curve(ax, f"{family} {probe}", series, series_color(series, i),
                             curves[series], "^")  # fmt: skip
            axes_style(ax, f"{FAMILY_NAMES.get(family, family)}: {probe}",
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
    for ax, probe in zip(canvas.axes[0], probes, strict=True):
        curves = collect(members, _final_series, _level, lambda a, p=probe: a.drop_of(p))
        _draw_final(canvas, ax, probe, curves)
        axes_style(ax, probe, "Pruning level (%)")
    return canvas.finish(folder, "The final (LM head) layer pruned unstructured (single weights) "
                         "or structured (whole rows); the drop of each dataset's headline score, "
                         f"pooled over the family's {_models_note(frame, members)}.")  # fmt: skip


def _final_series(arm: Arm) -> str:
    structured = arm.compression.prune_method in STRUCTURED_METHODS
    return f"{'structured' if structured else 'unstructured'} ({arm.compression.method})"


def _draw_final(canvas: Canvas, ax, panel: str, curves: dict) -> None:
    """Structured in red squares, unstructured in blue circles (other colours beyond two)."""
    for i, series in enumerate(sorted(curves)):
        structured = series.startswith("structured")
        color = "#d62728" if structured else "#1f77b4"
        canvas.curve(ax, panel, series, color if len(curves) <= 2 else OTHER_COLORS[i % 7],
                     curves[series], "s" if structured else "o")  # fmt: skip


def _final_averaged(frame: Frame, family: str, members: list[Arm], folder: Path) -> Plot:
    """Figs. 8-10: the final layer pruned structured vs unstructured, the drop averaged over
    the probes of each kind (Figs. 26-28 give the same per dataset)."""
    number = FINAL_AVERAGED[family]
    kinds = _kinds(members)
    canvas = Canvas(f"{NAMBURI}-fig{number}", f"{NAMBURI_CITE}, Fig. {number}: final layer "
                    f"pruning, {FAMILY_NAMES[family]}", 1, len(kinds))  # fmt: skip
    for ax, kind in zip(canvas.axes[0], kinds, strict=True):
        curves = collect(members, _final_series, _level, lambda a, k=kind: a.drop(kind=k))
        _draw_final(canvas, ax, kind, curves)
        axes_style(ax, PROBE_KINDS[kind], "Pruning level (%)")
    caption = ("The final (LM head) layer pruned unstructured (single weights) or structured "
               "(whole rows); the drop averaged over the probes of each kind, pooled over the "
               f"family's {_models_note(frame, members)}.")  # fmt: skip
    return canvas.finish(folder, caption)


def _fraction_figure(frame: Frame, members: list[Arm], folder: Path) -> Plot:
    """Fig. 11: the drop against the share of the model's parameters each compression changed,
    one row of panels per family. A share belongs to one model, so models do not pool here:
    with several models in a family, each has its own series."""
    families = _families(frame, members)
    kinds = _kinds(members)
    canvas = Canvas(f"{NAMBURI}-fig11", f"{NAMBURI_CITE}, Fig. 11: drop against the parameters "
                    "compressed", len(families), len(kinds))  # fmt: skip
    for row, (family, mine) in enumerate(families.items()):
        several = len({a.model for a in mine}) > 1
        labels = {kind: _labeler([a for a in mine if a.compression.kind == kind])
                  for kind in {a.compression.kind for a in mine}}  # fmt: skip

        def series_of(arm: Arm, several=several, labels=labels) -> str:
            name = f"{arm.compression.kind} {labels[arm.compression.kind](arm)}"
            return f"{name} ({arm.model})" if several else name

        for ax, kind in zip(canvas.axes[row], kinds, strict=True):
            curves = collect(mine, series_of, lambda a: 100 * a.fraction,  # type: ignore[operator]
                             lambda a, k=kind: a.drop(kind=k))  # fmt: skip
            for i, series in enumerate(sorted(curves)):
                marker = KIND_MARKERS.get(series.split(" ")[0], "v")
                canvas.curve(ax, f"{family} {kind}", series,
                             series_color(series.split(" ", 1)[1], i), curves[series],
                             marker)  # fmt: skip
            axes_style(ax, f"{FAMILY_NAMES.get(family, family)}: {PROBE_KINDS[kind]}",
                       "Parameters compressed (% of the model)")  # fmt: skip
    return canvas.finish(folder, "x: the share of the model's parameters a compression changed "
                         "(every weight of a quantized group; the weights the recipe zeroed in a "
                         "group that is only pruned); the drop averaged over the probes of each "
                         f"kind ({_models_note(frame, members)}).")  # fmt: skip
