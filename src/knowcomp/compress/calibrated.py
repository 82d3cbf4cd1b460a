"""Pieces shared by the calibrated methods: the damped inverse-Hessian factor of GPTQ and
SparseGPT, and the options of calibrated pruning (a level, or an n:m pattern)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from knowcomp.compress.pruning import count_to_prune
from knowcomp.compress.registry import CalibratedMethod, PruneMethod
from knowcomp.errors import RecipeError

if TYPE_CHECKING:
    from knowcomp.compress.layerwise import InputStats


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor U of (H + λI)⁻¹ (so (H + λI)⁻¹ = UᵀU), float64.

    λ is `percdamp` times the mean diagonal of H. Inputs that never fired (zero diagonal) get a
    unit diagonal, so they are compressed as if by themselves. If H + λI is still not positive
    definite (few calibration tokens), λ is raised tenfold, up to four times.
    """
    h = hessian.to(torch.float64).clone()
    diagonal = h.diagonal()
    diagonal[diagonal == 0] = 1.0
    damp = percdamp * diagonal.mean().item()
    for _ in range(5):
        damped = h.clone()
        damped.diagonal().add_(damp)
        factor, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if info == 0:
                return upper
        damp = max(damp * 10, 1e-8)
    raise RecipeError(
        "the layer's input Hessian is not positive definite even with dampening; "
        "use more calibration samples or a larger percdamp"
    )


def check_percdamp(method: str, percdamp: float) -> None:
    if not 0 < percdamp <= 1:
        raise RecipeError(f"{method}: percdamp must be in (0, 1], got {percdamp}")


def check_block_size(method: str, block_size: int) -> None:
    if block_size < 1:
        raise RecipeError(f"{method}: block_size must be positive, got {block_size}")


@dataclass(frozen=True)
class CalibratedPrune(CalibratedMethod, PruneMethod):
    """Options of calibrated pruning: an unstructured `level`, or `n` kept of every `m`
    consecutive inputs (the level is then 1 - n/m and may be left out)."""

    level_required = False
    level: float | None = None
    n: int | None = None
    m: int | None = None

    def __post_init__(self) -> None:
        if (self.n is None) != (self.m is None):
            raise RecipeError(f"{self.name}: give both n and m for an n:m pattern, e.g. n=2:m=4")
        if self.n is not None and self.m is not None:
            if not 0 < self.n < self.m:
                raise RecipeError(f"{self.name}: need 0 < n < m, got n={self.n}, m={self.m}")
            implied = 1 - self.n / self.m
            if self.level is not None and abs(self.level - implied) > 1e-9:
                raise RecipeError(
                    f"{self.name}: n={self.n}:m={self.m} prunes {implied:g} of the weights, "
                    f"not level {self.level}; leave the level out"
                )
            object.__setattr__(self, "level", implied)
        elif self.level is None:
            raise RecipeError(
                f"{self.name}: needs a level (prune:{self.name}:overall:0.5) or an n:m "
                f"pattern (prune:{self.name}:overall:n=2:m=4)"
            )
        if not 0.0 <= self.level <= 1.0:
            raise RecipeError(f"{self.name}: level must be a fraction in [0, 1], got {self.level}")

    @property
    def structured(self) -> bool:
        return self.m is not None

    def check_inputs(self, in_features: int) -> None:
        if self.m is not None and in_features % self.m:
            raise RecipeError(
                f"{self.name}: a layer has {in_features} inputs, not a multiple of m={self.m}; "
                "choose an m that divides every layer's input size"
            )

    def count(self, numel: int) -> int:
        return count_to_prune(self.level or 0.0, numel)

    def prune(self, weights: list[torch.Tensor], seed: int) -> None:
        raise RecipeError(
            f"{self.name} needs calibration data: apply it through a CompressionSession"
        )

    def compress_layer(self, module: nn.Module, stats: InputStats, seed: int) -> None:
        raise NotImplementedError
