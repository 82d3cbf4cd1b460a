"""Wanda (Sun et al., 2024): prune the weights with the smallest |W_ij| · ‖X_j‖₂, where ‖X_j‖₂
is the norm of input feature j over every calibration token. As in the paper, weights compete
within their output row: every row loses exactly round(level x inputs) weights (or, for n:m,
m - n of every m consecutive inputs). No weight is updated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from knowcomp.compress.calibrated import CalibratedPrune
from knowcomp.compress.pruning import count_to_prune
from knowcomp.compress.registry import register
from knowcomp.modules.layers import float_weight_out_in

if TYPE_CHECKING:
    from knowcomp.compress.layerwise import InputStats


def wanda_prune(
    weight: torch.Tensor,
    input_norms: torch.Tensor,
    *,
    level: float,
    n: int | None = None,
    m: int | None = None,
) -> None:
    """Prune a float (out, in) weight in place; exactly k weights per row (or group) go."""
    rows, cols = weight.shape
    score = weight.detach().abs().float() * input_norms.float()[None, :]
    if m is not None:
        groups = score.reshape(rows, cols // m, m)
        drop = torch.topk(groups, m - n, dim=2, largest=False).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, drop, True)
        weight.masked_fill_(mask.reshape(rows, cols), 0)
        return
    k = count_to_prune(level, cols)
    if k:
        drop = torch.topk(score, k, dim=1, largest=False, sorted=False).indices
        weight.masked_fill_(torch.zeros_like(score, dtype=torch.bool).scatter_(1, drop, True), 0)


@register
@dataclass(frozen=True)
class Wanda(CalibratedPrune):
    """Prune by |weight| x input-feature norm, per output row, to a level or an n:m pattern."""

    name = "wanda"
    summary = "Wanda: |W|·‖X‖ per output row, level or n:m (calibrated)"
    statistic = "input_norm"

    def compress_layer(self, module: nn.Module, stats: InputStats, seed: int) -> None:
        weight = float_weight_out_in(module)
        self.check_inputs(weight.shape[1])
        norms = stats.input_norms if stats.tokens else torch.ones(weight.shape[1])
        wanda_prune(weight, norms.to(weight.device), level=self.level or 0.0, n=self.n, m=self.m)
