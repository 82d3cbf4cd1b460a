"""Latency of one forward batch: the same token batch, timed the same way, for each model state.

Used by `knowcomp recover` to put a recovered model beside the uncompressed one and beside LoRA,
as the ICML 2024 study does. One warm-up call, then the median of `repeats` timed calls, each
under inference mode. These are wall-clock figures for the machine they ran on; compare only
figures from one run.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def latency_batch(
    vocab_size: int, batch: int = 8, tokens: int = 128, seed: int = 0
) -> torch.Tensor:
    """A fixed batch of token ids (ids 3.. avoid most special tokens)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (batch, tokens), generator=generator)


def forward_times(model: nn.Module, ids: torch.Tensor, repeats: int = 3) -> list[float]:
    """Seconds of each of `repeats` forwards of `ids` (with an all-ones attention mask), after
    one warm-up call."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if i:  # the first call warms up
                times.append(time.perf_counter() - start)
    return times


def forward_seconds(model: nn.Module, ids: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds of one forward of `ids` (with an all-ones attention mask)."""
    return statistics.median(forward_times(model, ids, repeats))
