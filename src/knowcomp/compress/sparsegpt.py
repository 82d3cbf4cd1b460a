"""SparseGPT (Frantar & Alistarh, 2023): prune a layer column by column and update the weights
still to be processed through the inverse Hessian of the layer's inputs, so its output on the
calibration text moves as little as possible (the same machinery as GPTQ, with zero instead of
the nearest grid point).

Which weights go is decided adaptively for each lazy batch of `block_size` columns: the ones with
the smallest w² / [H⁻¹]²_cc among the batch's weights, as updated so far. For an unstructured
level, each batch prunes its share of round(level x weights) (batch shares are cumulative, so
the layer's total is exact); for n:m, each group of m consecutive inputs in a row keeps n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from knowcomp.compress.calibrated import (
    CalibratedPrune,
    check_block_size,
    check_percdamp,
    inverse_hessian_factor,
)
from knowcomp.compress.pruning import count_to_prune
from knowcomp.compress.registry import register
from knowcomp.modules.layers import float_weight_out_in

if TYPE_CHECKING:
    from knowcomp.compress.layerwise import InputStats


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    level: float,
    n: int | None = None,
    m: int | None = None,
    block_size: int = 128,
    percdamp: float = 0.01,
) -> None:
    """Prune a float (out, in) weight in place (`level` unstructured, or n:m if `m` is given)."""
    rows, cols = weight.shape
    w = weight.detach().to(torch.float64).clone()
    u = inverse_hessian_factor(hessian, percdamp)
    if m is not None:
        block_size = max(m, block_size // m * m)  # an n:m group never splits
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1, u1 = w[:, i1:i2], u[i1:i2, i1:i2]
        err1 = torch.zeros(rows, i2 - i1, dtype=torch.float64)
        pruned = torch.zeros(rows, i2 - i1, dtype=torch.bool)
        saliency = w1**2 / u1.diagonal()[None, :] ** 2
        if m is None:
            k = count_to_prune(level, rows * i2) - count_to_prune(level, rows * i1)
            smallest = torch.argsort(saliency.flatten(), stable=True)[:k]
            pruned.view(-1)[smallest] = True
        for i in range(i2 - i1):
            if m is not None and i % m == 0:
                group = w1[:, i : i + m] ** 2 / u1.diagonal()[i : i + m][None, :] ** 2
                drop = torch.topk(group, m - n, dim=1, largest=False).indices
                pruned[:, i : i + m].scatter_(1, drop, True)
            col = w1[:, i]
            target = col.masked_fill(pruned[:, i], 0.0)
            err = (col - target) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            w1[:, i] = target  # exact zeros where pruned
            err1[:, i] = err
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    weight.copy_(w.to(weight.dtype))


@register
@dataclass(frozen=True)
class SparseGPT(CalibratedPrune):
    """Prune to a level or an n:m pattern, updating the remaining weights to keep the layer's
    outputs on the calibration text."""

    name = "sparsegpt"
    summary = "SparseGPT: level or n:m, remaining weights updated (calibrated)"
    statistic = "hessian"
    block_size: int = 128
    percdamp: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_percdamp(self.name, self.percdamp)
        check_block_size(self.name, self.block_size)

    def compress_layer(self, module: nn.Module, stats: InputStats, seed: int) -> None:
        weight = float_weight_out_in(module)
        self.check_inputs(weight.shape[1])
        sparsegpt_prune(
            weight,
            stats.hessian,
            level=self.level or 0.0,
            n=self.n,
            m=self.m,
            block_size=self.block_size,
            percdamp=self.percdamp,
        )
