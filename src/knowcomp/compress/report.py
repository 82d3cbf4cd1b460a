"""What a recipe did, counted from the weights themselves: sparsity, quantized modules, bytes.

Every figure is over a named group of linear layers (`GroupReport.over` says which, in words):
each recipe group, the union of the layers the recipe compressed (`CompressionReport.compressed`,
the headline), and every linear layer of the model, the LM head included even when it shares the
input embeddings' tensor (`CompressionReport.total`). Weights that were exactly zero before the
recipe touched them (converted checkpoints have some: GGUF Q4_1 weights can dequantize to 0)
are counted apart (`zeros_before`) from the net zeros the recipe added (`zeros_added`); the
session counts them on each layer just before its first change, so no copy is needed.

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
    """A layer's size before compression, and its stats then (a layer a recipe leaves alone
    reports them again instead of counting its zeros once more)."""

    weight_params: int
    bytes: int
    stats: LayerStats | None = field(default=None, compare=False)

    @classmethod
    def of(cls, module: nn.Module) -> LayerBaseline:
        stats = layer_stats(module, bits=None)
        return cls(stats.weight_params, stats.bytes_dense, stats)


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


def zero_count(module: nn.Module) -> int:
    """Exactly-zero weights of one linear layer, float or quantized (dequantized first)."""
    if isinstance(module, nnqd.Linear):
        values = module.weight().dequantize()
    elif hasattr(module.weight, "qdata"):  # a torchao quantized tensor
        values = module.weight.dequantize()
    else:
        values = module.weight.detach()
    return values.numel() - int(torch.count_nonzero(values))  # 10x faster than (values == 0)


def layer_stats(module: nn.Module, bits: int | None, zeros: int | None = None) -> LayerStats:
    """Weights, zeros and sizes of one linear layer, float or quantized (`zeros`: its exact
    zeros when counted already)."""
    out_f, in_f = weight_shape(module)
    numel = out_f * in_f
    if isinstance(module, nnqd.Linear):
        weight = module.weight()
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
            extra = sum(
                getattr(weight, name).nbytes
                for name in ("scale", "zero_point")
                if getattr(weight, name, None) is not None
            )
            bits, quantized = bits or 8, True
        else:
            extra = 0
            bits, quantized = weight.element_size() * 8, False
    zeros = zero_count(module) if zeros is None else zeros
    bias_bytes = 0 if bias is None else bias.numel() * bias.element_size()
    dense, compressed = _sparse_or_dense(numel, numel - zeros, bits)
    return LayerStats(
        numel, zeros, quantized, dense + extra + bias_bytes, compressed + extra + bias_bytes
    )


@dataclass
class GroupReport:
    """One row of the report: a group of layers after the whole recipe.

    `zeros` (and `sparsity`) count every exactly-zero weight now; `zeros_before` those that were
    zero before the recipe; `zeros_added` the difference (net: a method that updates weights,
    such as GPTQ, can move a zero weight off zero). `over` names the group in words.
    """

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
    zeros_before: int
    zeros_added: int
    over: str

    @property
    def sparsity_before(self) -> float:
        return self.zeros_before / self.weight_params if self.weight_params else 0.0

    @property
    def sparsity_added(self) -> float:
        return self.zeros_added / self.weight_params if self.weight_params else 0.0

    def describe_sparsity(self) -> str:
        """`sparsity 20.00% over the 210 layers of overall (0.01% were zero before, 19.99%
        zeroed by the recipe)`."""
        return (
            f"sparsity {self.sparsity:.2%} over {self.over} ({self.sparsity_before:.2%} "
            f"were zero before, {self.sparsity_added:.2%} zeroed by the recipe)"
        )


@dataclass(frozen=True)
class StepZeros:
    """Zeros of one recipe step's layers just before and just after that step: what this
    step added, where a group row sums every step on the group."""

    step: int  # 1-based, in recipe order
    method: str
    group: str
    over: str
    weight_params: int
    zeros_before: int
    zeros_after: int

    @classmethod
    def of(cls, index: int, planned: PlannedStep, before: int, after: int) -> StepZeros:
        names = planned.layers
        return cls(index, planned.step.method.name, planned.step.group,
                   _layers_of(len(names), planned.step.group),
                   sum(layer.weight_params for layer in names), before, after)  # fmt: skip

    @property
    def zeros_added(self) -> int:
        return self.zeros_after - self.zeros_before

    def describe(self) -> str:
        """`step 2 (dynamic_int8 on the 211 layers of all_linear): 16.94% were zero before it,
        it added 0.01%`."""
        params = self.weight_params or 1
        return (
            f"step {self.step} ({self.method} on {self.over}): "
            f"{self.zeros_before / params:.2%} were zero before it, "
            f"it added {self.zeros_added / params:.2%}"
        )


@dataclass
class CompressionReport:
    model: str
    family: str
    recipe: str
    steps: list[dict[str, Any]]
    seed: int
    groups: list[GroupReport]
    total: GroupReport  # every linear layer (the LM head included)
    compressed: GroupReport  # the union of the layers the recipe touched: the headline
    notes: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # source, nsamples, seqlen, seed (calibrated steps)
    step_zeros: list[StepZeros] = field(default_factory=list)  # one per recipe step
    placement: dict[str, Any] | None = None  # device and dtype it ran on (`ChosenPlacement`)

    def headline(self) -> str:
        """One line: the sparsity over the compressed layers, then over all linear layers."""
        main = self.compressed.describe_sparsity()
        if self.compressed.layers == self.total.layers:
            return f"{main}; these are {self.total.over}"
        return f"{main}; {self.total.sparsity:.2%} over {self.total.over}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for record, step in zip(out["step_zeros"], self.step_zeros, strict=True):
            record["zeros_added"] = step.zeros_added
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass(frozen=True)
class _LayerCounts:
    """Every linear layer's stats now, its size before, and its zeros before the recipe."""

    stats: dict[str, LayerStats]
    baseline: dict[str, LayerBaseline]
    zeros_before: dict[str, int]  # touched layers only; the others are unchanged

    def row(self, group: str, methods: list[str], names: list[str], over: str) -> GroupReport:
        stats = [self.stats[n] for n in names]
        params = sum(s.weight_params for s in stats)
        zeros = sum(s.zeros for s in stats)
        before = sum(self.zeros_before.get(n, self.stats[n].zeros) for n in names)
        return GroupReport(
            group=group,
            methods=methods,
            layers=len(names),
            weight_params=params,
            zeros=zeros,
            sparsity=zeros / params if params else 0.0,
            quantized_modules=sum(s.quantized for s in stats),
            bytes_before=sum(self.baseline[n].bytes for n in names),
            bytes_after_dense=sum(s.bytes_dense for s in stats),
            bytes_after_compressed=sum(s.bytes_compressed for s in stats),
            zeros_before=before,
            zeros_added=zeros - before,
            over=over,
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
    zeros_before: dict[str, int] | None = None,
    step_zeros: list[StepZeros] | None = None,
    zeros_now: dict[str, int] | None = None,
    head: tuple[str, bool] | None = None,
    model_name: str | None = None,
    family: str = "",
    calibration: dict[str, Any] | None = None,
) -> CompressionReport:
    """Count everything from the model as it is now. `zeros_before` holds, per touched layer,
    its exactly-zero weights before the recipe (layers missing from it are unchanged);
    `step_zeros` the zeros of each step's layers around that step; `zeros_now` the zeros
    of changed layers as they are now, where counted already (else counted here); `head`
    is the LM head's name and whether it was tied to the input embeddings."""
    modules = dict(model.named_modules())
    changed = set(zeros_before or {}) | {layer.name for p in planned for layer in p.layers}

    def now(name: str) -> LayerStats:
        known = baseline[name].stats
        if name in changed or known is None:
            return layer_stats(modules[name], bits.get(name), (zeros_now or {}).get(name))
        return known  # untouched by the recipe: as it was before

    counts = _LayerCounts({n: now(n) for n in baseline}, baseline, zeros_before or {})
    by_group: dict[str, list[str]] = defaultdict(list)
    members: dict[str, list[str]] = {}
    for p in planned:
        by_group[p.step.group].append(p.step.method.describe())
        members[p.step.group] = [layer.name for layer in p.layers]
    groups = [
        counts.row(g, methods, members[g], _layers_of(len(members[g]), g))
        for g, methods in by_group.items()
    ]
    touched = {name for names in members.values() for name in names}
    union = [name for name in baseline if name in touched]
    words = _layers_of(len(union), " + ".join(by_group))
    compressed = counts.row("compressed layers", [], union, words)
    total = counts.row("all linear layers", [], list(baseline), _all_linear_words(baseline, head))
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
        compressed=compressed,
        step_zeros=list(step_zeros or []),
    )


def _layers_of(count: int, groups: str) -> str:
    return f"the {count} layer{'s' if count != 1 else ''} of {groups}"


def _all_linear_words(baseline: dict[str, LayerBaseline], head: tuple[str, bool] | None) -> str:
    """`all 211 linear layers (lm_head, tied to the embeddings, included)`: what the total row
    is over, so a sparsity over it is not mistaken for one over the compressed layers."""
    words = f"all {len(baseline)} linear layers"
    if head is None or head[0] not in baseline:
        return words
    name, tied = head
    return f"{words} ({name}{', tied to the embeddings,' if tied else ''} included)"
