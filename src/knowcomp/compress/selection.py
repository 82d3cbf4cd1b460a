"""Exact k-smallest selection across many tensors without concatenating them.

Global magnitude pruning needs the k-th smallest score over every weight of a group. Joining
all weights into one tensor (as `torch.nn.utils.prune.global_unstructured` does) needs memory
proportional to the model; here a two-pass radix select over the float bit patterns finds the
exact threshold with two histograms of 32k and 64k bins, holding one tensor's scores at a time.

Scores must be non-negative float32 (absolute weights, or uniform random numbers): their bit
patterns read as int32 are then in the same order as the floats. Ties at the threshold are
broken by position (tensor order, then flat index), so exactly k entries are selected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

ScoreFn = Callable[[int, torch.Tensor], torch.Tensor]
_HI_BINS = 1 << 15  # sign bit is 0, so the high half-word is below 2**15
_LO_BINS = 1 << 16


def _keys(score: ScoreFn, index: int, tensor: torch.Tensor) -> torch.Tensor:
    return score(index, tensor).to(torch.float32).contiguous().view(torch.int32).flatten()


def _pick_bin(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th smallest entry (1-based) and the count below that bin."""
    cum = torch.cumsum(hist, 0)
    b = int(torch.searchsorted(cum, torch.tensor(k, dtype=cum.dtype)).item())
    below = int(cum[b - 1].item()) if b > 0 else 0
    return b, below


def _key_source(tensors: Sequence[torch.Tensor], score: ScoreFn) -> ScoreFn:
    """`_keys` for each pass over `tensors`; one tensor's keys are computed once and kept for
    every pass (memory for one tensor's scores is held anyway), several tensors' each time."""
    if len(tensors) != 1:
        return lambda i, t: _keys(score, i, t)
    kept = _keys(score, 0, tensors[0])
    return lambda _i, _t: kept


def threshold(tensors: Sequence[torch.Tensor], k: int, score: ScoreFn,
              keys_of: ScoreFn | None = None) -> tuple[int, int]:  # fmt: skip
    """(threshold key, ties to take): select every key below the threshold key, then the first
    `ties to take` keys equal to it. Requires 1 <= k <= total number of entries.
    """
    keys_of = keys_of or (lambda i, t: _keys(score, i, t))
    device = tensors[0].device
    hi_hist = torch.zeros(_HI_BINS, dtype=torch.int64, device=device)
    for i, t in enumerate(tensors):
        hi_hist += torch.bincount(keys_of(i, t) >> 16, minlength=_HI_BINS)
    hi, below = _pick_bin(hi_hist, k)
    lo_hist = torch.zeros(_LO_BINS, dtype=torch.int64, device=device)
    for i, t in enumerate(tensors):
        keys = keys_of(i, t)
        lo_hist += torch.bincount(keys[(keys >> 16) == hi] & 0xFFFF, minlength=_LO_BINS)
    lo, below_lo = _pick_bin(lo_hist, k - below)
    return (hi << 16) | lo, k - below - below_lo


def zero_smallest(tensors: Sequence[torch.Tensor], k: int, score: ScoreFn) -> None:
    """Set to zero, in place, the k entries with the smallest scores across `tensors`."""
    total = sum(t.numel() for t in tensors)
    if k <= 0 or total == 0:
        return
    k = min(k, total)
    keys_of = _key_source(tensors, score)
    key_at, ties_left = threshold(tensors, k, score, keys_of)
    for i, t in enumerate(tensors):
        keys = keys_of(i, t)
        mask = keys < key_at
        if ties_left > 0:
            tie_positions = torch.nonzero(keys == key_at).flatten()[:ties_left]
            mask[tie_positions] = True
            ties_left -= tie_positions.numel()
        t.masked_fill_(mask.view(t.shape), 0)


def magnitude(_: int, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.abs()


def seeded_uniform(seed: int) -> ScoreFn:
    """Uniform random scores that are the same on every pass (one generator per tensor)."""

    def score(index: int, tensor: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + index)
        return torch.rand(tensor.shape, generator=gen).to(tensor.device)

    return score
