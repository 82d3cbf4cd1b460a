"""Parameter counts per module group, in the layout of the first study's Table 3."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from torch import nn

from knowcomp.modules.groups import LinearLayer, group_members

TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("overall", "Overall"),
    ("attention", "Attention"),
    ("feed_forward", "Feed-forward"),
    ("final_layer", "Final layer"),
)
DETAIL_ROWS: tuple[tuple[str, str], ...] = (
    ("self_attention", "  self-attention"),
    ("cross_attention", "  cross-attention"),
    ("encoder_attention", "  encoder attention"),
    ("decoder_attention", "  decoder attention"),
    ("other", "  other (in overall)"),
)


@dataclass(frozen=True)
class GroupRow:
    group: str
    label: str
    layers: int
    params: int
    share: float  # of total trainable parameters
    names: tuple[str, ...]


def total_trainable(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once (tied heads, ALBERT's layers)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def group_rows(model: nn.Module, layers: list[LinearLayer]) -> list[GroupRow]:
    """The main rows, then non-empty detail rows, each with its layers and parameters."""
    total = total_trainable(model)
    rows = []
    for group, label in TABLE_ROWS + DETAIL_ROWS:
        members = group_members(layers, group)
        if not members and (group, label) in DETAIL_ROWS:
            continue
        params = sum(layer.params for layer in members)
        rows.append(
            GroupRow(
                group,
                label,
                len(members),
                params,
                params / total if total else 0.0,
                tuple(layer.name for layer in members),
            )
        )
    return rows


def summarize_names(names: tuple[str, ...] | list[str]) -> list[str]:
    """Collapse block indices: `model.layers.{0-29}.mlp.up_proj` instead of 30 lines."""
    groups: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    for name in names:
        numbers = tuple(int(n) for n in re.findall(r"(?<=\.)\d+(?=\.|$)", name))
        pattern = re.sub(r"(?<=\.)\d+(?=\.|$)", "{}", name)
        groups[pattern].append(numbers)
    spans = []
    for pattern, numbers in groups.items():
        slots = list(zip(*numbers, strict=True)) if numbers and numbers[0] else []
        spans.append(pattern.format(*[_span(sorted(set(slot))) for slot in slots]))
    return _merge_leaves(spans)


def _merge_leaves(names: list[str]) -> list[str]:
    """`a.{q,k,v}` for `a.q`, `a.k`, `a.v` (siblings that share everything but the leaf)."""
    by_parent: dict[str, list[str]] = defaultdict(list)
    for name in names:
        parent, _, leaf = name.rpartition(".")
        by_parent[parent].append(leaf)
    lines = []
    for parent, leaves in by_parent.items():
        leaf = leaves[0] if len(leaves) == 1 else "{" + ",".join(leaves) + "}"
        lines.append(f"{parent}.{leaf}" if parent else leaf)
    return lines


def _span(values: list[int]) -> str:
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"{{{values[0]}-{values[-1]}}}"
    return "{" + ",".join(map(str, values)) + "}"
