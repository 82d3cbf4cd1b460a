"""What a recipe did, counted from the weights themselves: sparsity, quantized modules, bytes.

Sizes: `bytes_before` is the dense float layout before compression; `bytes_after_dense` is the
dense layout after (quantized weights at their bit width plus their scales and zero points);
`bytes_after_compressed` additionally stores pruned weights sparsely (a one-bit-per-weight mask
plus the non-zero values) when that is smaller. Biases count in every figure.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd

from knowcomp.modules.layers import weight_shape

if TYPE_CHECKING:
    from knowcomp.compress.recipe import Recipe
    from knowcomp.compress.session import PlannedStep


@dataclass(frozen=True)
class LayerBaseline:
    """A layer's size before compression."""

    weight_params: int
    bytes: int

    @classmethod
    def of(cls, module: nn.Module) -> LayerBaseline:
        stats = layer_stats(module, bits=None)
        return cls(stats.weight_params, stats.bytes_dense)


@dataclass(frozen=True)
class LayerStats:
    weight_params: int
    zeros: int
    quantized: bool
    bytes_dense: int
    bytes_compressed: int


def _sparse_or_dense(numel: int, nonzeros: int, bits: int) -> tuple[int, int]:
    dense = (numel * bits + 7) // 8
    sparse = (numel + 7) // 8 + (nonzeros * bits + 7) // 8
    return dense, min(dense, sparse)


def layer_stats(module: nn.Module, bits: int | None) -> LayerStats:
    """Weights, zeros and sizes of one linear layer, float or quantized."""
    out_f, in_f = weight_shape(module)
    numel = out_f * in_f
    if isinstance(module, nnqd.Linear):
        weight = module.weight()
        values = weight.dequantize()
        if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            extra = 8  # one float32 scale and one int32 zero point
        else:
            extra = weight.q_per_channel_scales().nbytes + weight.q_per_channel_zero_points().nbytes
        bias = module.bias()
        bits, quantized = 8, True
    else:
        weight = module.weight
        bias = module.bias
        if hasattr(weight, "qdata"):  # a torchao quantized tensor
            values = weight.dequantize()
            extra = sum(
                getattr(weight, name).nbytes
                for name in ("scale", "zero_point")
                if getattr(weight, name, None) is not None
            )
            bits, quantized = bits or 8, True
        else:
            values = weight.detach()
            extra = 0
            bits, quantized = weight.element_size() * 8, False
    zeros = int((values == 0).sum().item())
    bias_bytes = 0 if bias is None else bias.numel() * bias.element_size()
    dense, compressed = _sparse_or_dense(numel, numel - zeros, bits)
    return LayerStats(
        numel, zeros, quantized, dense + extra + bias_bytes, compressed + extra + bias_bytes
    )


@dataclass
class GroupReport:
    """One row of the report: a group (as named in the recipe) after the whole recipe."""

    group: str
    methods: list[str]
    layers: int
    weight_params: int
    zeros: int
    sparsity: float
    quantized_modules: int
    bytes_before: int
    bytes_after_dense: int
    bytes_after_compressed: int


@dataclass
class CompressionReport:
    model: str
    family: str
    recipe: str
    steps: list[dict[str, Any]]
    seed: int
    groups: list[GroupReport]
    total: GroupReport
    notes: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # source, nsamples, seqlen, seed (calibrated steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _group_report(
    group: str,
    methods: list[str],
    names: list[str],
    modules: dict[str, nn.Module],
    baseline: dict[str, LayerBaseline],
    bits: dict[str, int],
) -> GroupReport:
    stats = [layer_stats(modules[n], bits.get(n)) for n in names]
    params = sum(s.weight_params for s in stats)
    zeros = sum(s.zeros for s in stats)
    return GroupReport(
        group=group,
        methods=methods,
        layers=len(names),
        weight_params=params,
        zeros=zeros,
        sparsity=zeros / params if params else 0.0,
        quantized_modules=sum(s.quantized for s in stats),
        bytes_before=sum(baseline[n].bytes for n in names),
        bytes_after_dense=sum(s.bytes_dense for s in stats),
        bytes_after_compressed=sum(s.bytes_compressed for s in stats),
    )


def build_report(
    model: nn.Module,
    recipe: Recipe,
    planned: list[PlannedStep],
    baseline: dict[str, LayerBaseline],
    bits: dict[str, int],
    *,
    seed: int,
    notes: list[str],
    model_name: str | None = None,
    family: str = "",
    calibration: dict[str, Any] | None = None,
) -> CompressionReport:
    """Count everything from the model as it is now."""
    modules = dict(model.named_modules())
    by_group: dict[str, list[str]] = defaultdict(list)
    members: dict[str, list[str]] = {}
    for p in planned:
        by_group[p.step.group].append(p.step.method.describe())
        members[p.step.group] = [layer.name for layer in p.layers]
    groups = [
        _group_report(g, methods, members[g], modules, baseline, bits)
        for g, methods in by_group.items()
    ]
    total = _group_report("all linear layers", [], list(baseline), modules, baseline, bits)
    return CompressionReport(
        model=model_name or type(model).__name__,
        family=family,
        recipe=recipe.to_compact(),
        steps=recipe.to_dicts(),
        seed=seed,
        groups=groups,
        total=total,
        notes=notes,
        calibration=calibration,
    )
