"""Pruning methods: permanent zeros written into the weights, no masks left behind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from knowcomp.compress.registry import PruneMethod, register
from knowcomp.compress.selection import magnitude, seeded_uniform, zero_smallest
from knowcomp.errors import RecipeError

Scope = Literal["global", "layer"]


def count_to_prune(level: float, numel: int) -> int:
    """round(level * numel), halves rounded up (as torch.nn.utils.prune does)."""
    return int(level * numel + 0.5)


def _check_level(method: str, level: float) -> None:
    if not 0.0 <= level <= 1.0:
        raise RecipeError(
            f"{method}: level must be a fraction in [0, 1], got {level}; write e.g. 0.5 or 50%"
        )


@dataclass(frozen=True)
class _Unstructured(PruneMethod):
    level: float
    scope: Scope = "global"

    def __post_init__(self) -> None:
        _check_level(self.name, self.level)
        if self.scope not in ("global", "layer"):
            raise RecipeError(f"{self.name}: scope must be global or layer, got '{self.scope}'")

    def _score(self, seed: int):
        raise NotImplementedError

    def prune(self, weights: list[torch.Tensor], seed: int) -> None:
        score = self._score(seed)
        if self.scope == "global":
            zero_smallest(
                weights, count_to_prune(self.level, sum(w.numel() for w in weights)), score
            )
            return
        for i, w in enumerate(weights):
            zero_smallest([w], count_to_prune(self.level, w.numel()), lambda _, t, i=i: score(i, t))


@register
@dataclass(frozen=True)
class L1Unstructured(_Unstructured):
    """Zero the smallest-magnitude weights; `global` uses one threshold for the whole group."""

    name = "l1_unstructured"
    summary = "magnitude pruning of single weights (scope: global threshold, or per layer)"

    def _score(self, seed: int):
        return magnitude


@register
@dataclass(frozen=True)
class RandomUnstructured(_Unstructured):
    """Zero weights chosen uniformly at random: the baseline magnitude pruning should beat."""

    name = "random_unstructured"
    summary = "random single weights (baseline), seeded"

    def _score(self, seed: int):
        return seeded_uniform(seed)


@dataclass(frozen=True)
class _Structured(PruneMethod):
    level: float

    def __post_init__(self) -> None:
        _check_level(self.name, self.level)

    def _rows_to_prune(self, index: int, weight: torch.Tensor, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def prune(self, weights: list[torch.Tensor], seed: int) -> None:
        for i, w in enumerate(weights):
            k = count_to_prune(self.level, w.shape[0])
            if k:
                w[self._rows_to_prune(i, w, seed)[:k]] = 0


@register
@dataclass(frozen=True)
class LnStructured(_Structured):
    """Zero whole output rows with the smallest Lp norm, per layer (bias is left as it is)."""

    name = "ln_structured"
    summary = "whole output rows with the smallest Lp norm (p=1 default), per layer"
    p: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.p > 0:
            raise RecipeError(f"ln_structured: p must be positive (or inf), got {self.p}")

    def _rows_to_prune(self, index: int, weight: torch.Tensor, seed: int) -> torch.Tensor:
        norms = torch.linalg.vector_norm(weight.float(), ord=self.p, dim=1)
        return torch.argsort(norms, stable=True)


@register
@dataclass(frozen=True)
class RandomStructured(_Structured):
    """Zero whole output rows chosen at random, per layer: the structured baseline."""

    name = "random_structured"
    summary = "random whole output rows (baseline), per layer, seeded"

    def _rows_to_prune(self, index: int, weight: torch.Tensor, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
        return torch.randperm(weight.shape[0], generator=gen).to(weight.device)


@register
@dataclass(frozen=True)
class NMSparsity(PruneMethod):
    """Keep the n largest-magnitude weights in every m consecutive inputs (2:4 by default)."""

    name = "nm"
    summary = "n:m semi-structured magnitude pruning (n kept of every m inputs), e.g. n=2,m=4"
    takes_level = False
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise RecipeError(f"nm: need 0 < n < m, got n={self.n}, m={self.m}")

    @property
    def level(self) -> float:
        return 1 - self.n / self.m

    def prune(self, weights: list[torch.Tensor], seed: int) -> None:
        for w in weights:
            out_f, in_f = w.shape
            if in_f % self.m:
                raise RecipeError(
                    f"nm: a layer has {in_f} inputs, not a multiple of m={self.m}; "
                    "choose an m that divides every layer's input size"
                )
            scores = w.abs().reshape(out_f, in_f // self.m, self.m)
            drop = torch.topk(scores, self.m - self.n, dim=2, largest=False).indices
            mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(2, drop, True)
            w.masked_fill_(mask.reshape(out_f, in_f), 0)  # also writes through Conv1D's view
