"""GPTQ (Frantar et al., 2023): integer weights chosen column by column, each column's rounding
error spread over the columns not yet quantized through the inverse Hessian of the layer's
inputs, so the layer's output on the calibration text moves as little as possible.

The grid is exactly `weight_only`'s (torchao's affine parameters: symmetric or asymmetric,
per output row or per `group_size` inputs), and the result is stored the same way, as a torchao
`IntxUnpackedToInt8Tensor` (integers in int8 storage plus a scale and zero point per group): real
integer weights, not floats rounded in place, so GPTQ and round-to-nearest differ only in which
integers they pick.

Groups: without act-order, a group's scale and zero point are chosen when GPTQ reaches its first
column, from the weights as updated so far (the paper's choice). With act-order (columns in
order of decreasing Hessian diagonal), the groups' parameters are fixed from the original
weights before GPTQ starts ("static groups"), so every group still covers contiguous inputs and
the standard layout holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from knowcomp.compress.calibrated import (
    check_block_size,
    check_percdamp,
    inverse_hessian_factor,
)
from knowcomp.compress.quantization import WeightOnly, as_linear
from knowcomp.compress.registry import CalibratedMethod, QuantMethod, register
from knowcomp.errors import RecipeError

if TYPE_CHECKING:
    from knowcomp.compress.layerwise import InputStats


@dataclass(frozen=True)
class IntGrid:
    """Signed `bits`-bit integers with a scale and zero point per row and group of inputs."""

    bits: int
    symmetric: bool
    group_size: int | None

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def group(self, in_features: int) -> int:
        return self.group_size or in_features

    def params(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, int8 zero point), each [rows, in / group], as torchao computes them."""
        from torchao.quantization import MappingType
        from torchao.quantization.quant_primitives import choose_qparams_affine

        return choose_qparams_affine(
            weight,
            MappingType.SYMMETRIC if self.symmetric else MappingType.ASYMMETRIC,
            (1, self.group(weight.shape[1])),
            target_dtype=torch.int8,
            quant_min=self.qmin,
            quant_max=self.qmax,
            zero_point_dtype=torch.int8,
            keepdim=True,
        )

    def round(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Nearest grid integers for `w` (float64), as torchao's quantize_affine rounds."""
        return torch.clamp(torch.round(w * (1.0 / scale)) + zero, self.qmin, self.qmax)


@dataclass
class QuantizedWeight:
    qdata: torch.Tensor  # int8 [rows, in], values in [qmin, qmax]
    scale: torch.Tensor  # [rows, in / group], the weight's float dtype
    zero_point: torch.Tensor  # int8 [rows, in / group]

    def dequantize(self, group: int) -> torch.Tensor:
        scale = self.scale.repeat_interleave(group, dim=1).double()
        zero = self.zero_point.repeat_interleave(group, dim=1).double()
        return (self.qdata.double() - zero) * scale


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    grid: IntGrid,
    *,
    block_size: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
) -> QuantizedWeight:
    """Quantize a float (out, in) weight with GPTQ given E[x xᵀ] of its inputs."""
    rows, cols = weight.shape
    group = grid.group(cols)
    if cols % group:
        raise RecipeError(
            f"gptq: group_size {group} does not divide a layer's {cols} inputs; "
            "choose a divisor of every layer's input size"
        )
    w = weight.detach().to(torch.float64).clone()
    scale = torch.empty(rows, cols // group, dtype=weight.dtype)
    zero = torch.empty(rows, cols // group, dtype=torch.int8)
    static = act_order or group == cols
    if static:  # parameters from the original weights, before any update
        scale[:], zero[:] = grid.params(weight.detach())
    order = torch.arange(cols)
    h = hessian
    if act_order:
        order = torch.argsort(hessian.diagonal(), descending=True, stable=True)
        w, h = w[:, order], hessian[order][:, order]
    u = inverse_hessian_factor(h, percdamp)
    group_of = order // group  # the group of each column, in processing order
    if not static:  # a lazy batch never splits a group
        block_size = max(group, block_size // group * group)
    q = torch.empty(rows, cols, dtype=torch.int8)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1, u1 = w[:, i1:i2], u[i1:i2, i1:i2]
        err1 = torch.zeros(rows, i2 - i1, dtype=torch.float64)
        for i in range(i2 - i1):
            c = i1 + i
            if not static and c % group == 0:
                s, z = grid.params(w[:, c : c + group].to(weight.dtype))
                scale[:, c // group], zero[:, c // group] = s[:, 0], z[:, 0]
            s, z = scale[:, group_of[c]].double(), zero[:, group_of[c]].double()
            col = w1[:, i]
            ints = grid.round(col, s, z)
            q[:, c] = ints.to(torch.int8)
            err = (col - (ints - z) * s) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    if act_order:
        q = q[:, torch.argsort(order)]
    return QuantizedWeight(q, scale, zero)


def to_torchao(linear: nn.Linear, quantized: QuantizedWeight, grid: IntGrid) -> nn.Linear:
    """A copy of `linear` whose weight is torchao's int tensor holding `quantized`."""
    from torchao.quantization import IntxUnpackedToInt8Tensor

    weight = linear.weight
    tensor = IntxUnpackedToInt8Tensor(
        quantized.qdata.to(weight.device),
        quantized.scale.to(weight.device),
        quantized.zero_point.to(weight.device),
        getattr(torch, f"int{grid.bits}"),
        (1, grid.group(linear.in_features)),
        weight.dtype,
        None,
    )
    out = nn.Linear(linear.in_features, linear.out_features, bias=False, device="meta")
    out.weight = nn.Parameter(tensor, requires_grad=False)
    out.bias = linear.bias  # shared, never written
    return out.train(linear.training)


@register
@dataclass(frozen=True)
class GPTQ(CalibratedMethod, QuantMethod):
    """GPTQ integer weights (2-8 bits) on weight_only's grid, chosen to keep the layer's
    outputs on the calibration text."""

    name = "gptq"
    summary = "GPTQ int weights, bits 2-8, per channel or group_size inputs (calibrated)"
    statistic = "hessian"
    bits: int = 4
    group_size: int | None = None
    symmetric: bool = True
    act_order: bool = False
    percdamp: float = 0.01
    block_size: int = 128

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise RecipeError(f"gptq: bits must be 2 to 8, got {self.bits}")
        if self.group_size is not None and self.group_size <= 0:
            raise RecipeError(f"gptq: group_size must be positive, got {self.group_size}")
        check_percdamp(self.name, self.percdamp)
        check_block_size(self.name, self.block_size)

    @property
    def grid(self) -> IntGrid:
        return IntGrid(self.bits, self.symmetric, self.group_size)

    def weight_bits(self) -> int:
        return self.bits

    def quantize(self, module: nn.Module) -> nn.Module:
        """Round-to-nearest on GPTQ's grid: the layout a saved GPTQ model is rebuilt in before
        its integers are loaded (GPTQ itself needs calibration: `compress_layer`)."""
        return WeightOnly(self.bits, self.group_size, self.symmetric).quantize(module)

    def compress_layer(self, module: nn.Module, stats: InputStats, seed: int) -> nn.Module:
        linear = as_linear(module)
        quantized = gptq_quantize(
            linear.weight.detach().cpu(),
            stats.hessian,
            self.grid,
            block_size=self.block_size,
            percdamp=self.percdamp,
            act_order=self.act_order,
        )
        return to_torchao(linear, quantized, self.grid)
