"""Layer-wise similarity to the uncompressed model, as in Fig. 5 of *Do Compressed LLMs Forget
Knowledge?* (Hoang et al., 2024): one figure per model (`hoang2024-fig5`, or
`hoang2024-fig5-MODEL` when the study has several), two panels (attention maps, hidden
activations), x the layer, y the mean cosine similarity, one line per compressed trial and per
recovery method (dashed: the recovered model with its adapter attached)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path
from typing import Any

from knowcomp.report.plots import OTHER_COLORS, Plot, _figure, _save, _slug

SIMILARITY_COLUMNS = ("model", "sweep", "recipe", "level", "seed", "layer", "attention_cosine",
                      "hidden_cosine", "texts")  # fmt: skip
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", *OTHER_COLORS)
FIG5 = "hoang2024-fig5"


def draw_similarity(rows: list[dict[str, Any]], folder: Path) -> list[Plot]:
    """One figure per model with similarity rows (from `ResultsStore.similarity()`); none
    without rows."""
    plots: list[Plot] = []
    slugs: set[str] = set()
    groups = [(model, list(group)) for model, group in groupby(rows, key=lambda r: r["model"])]
    for model, mine in groups:
        slug = base = _slug(model)
        count = 1
        while slug in slugs:
            count += 1
            slug = f"{base}-{count}"
        slugs.add(slug)
        folder.mkdir(parents=True, exist_ok=True)
        name = FIG5 if len(groups) == 1 else f"{FIG5}-{slug}"
        plots.append(_draw(model, mine, folder, name))
    return plots


def _draw(model: str, rows: list[dict[str, Any]], folder: Path, name: str) -> Plot:
    trials = list(dict.fromkeys(r["trial_key"] for r in rows))
    several_seeds = len({r["seed"] for r in rows}) > 1
    fig, axes = _figure(2)
    for i, key in enumerate(trials):
        layers = sorted((r for r in rows if r["trial_key"] == key), key=lambda r: r["layer"])
        first = layers[0]
        label = first["recipe"] + (f" + {_short(first['method'])}" if first.get("method") else "")
        label += f" (seed {first['seed']})" if several_seeds else ""
        style = dict(label=label, color=_PALETTE[i % len(_PALETTE)], marker="o", markersize=3,
                     linewidth=1.3, linestyle="--" if first.get("method") else "-")  # fmt: skip
        xs = [r["layer"] for r in layers]
        attention = [(x, r["attention_cosine"]) for x, r in zip(xs, layers, strict=True)
                     if r["attention_cosine"] is not None]  # fmt: skip
        if attention:
            axes[0].plot(*zip(*attention, strict=True), **style)
        axes[1].plot(xs, [r["hidden_cosine"] for r in layers], **style)
    from matplotlib.ticker import MaxNLocator

    texts = sorted({r["texts"] for r in rows})
    for ax, title in zip(axes, ("Attention maps", "Hidden activations"), strict=True):
        ax.axhline(1.0, color="#999999", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("Layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_ylabel("Cosine similarity")
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()  # every trial has a hidden line
    fig.set_figheight(fig.get_figheight() + 0.2 * -(-len(labels) // 2))  # room for the legend
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=7)
    title = f"Hoang et al. (2024), Fig. 5: {model}, layer-wise similarity to the uncompressed model"
    fig.suptitle(title, fontsize=11)
    caption = (
        "Mean cosine similarity, per layer, between each compressed trial (dashed: a recovered "
        "one, with its adapter attached) and the uncompressed model on the same texts "
        f"({', '.join(map(str, texts))} texts): attention rows over the input tokens, per head "
        "and query token (left); each layer's output per token (right). 1.0 = unchanged."
    )
    return _save(fig, folder, name, title, caption)


def write_similarity(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """The data behind the similarity figures, one row per trial x layer."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SIMILARITY_COLUMNS)
        for r in rows:
            writer.writerow(["" if r[c] is None else r[c] for c in SIMILARITY_COLUMNS])
    return path


def _short(method: str) -> str:
    """A recovery method's name and prompt lengths (`idp tokens=26+100`), not every setting."""
    name, *options = method.split(":")
    tokens = [o for o in options if o.startswith("tokens=")]
    return " ".join([name, *tokens])
