"""The training loop every recovery method shares: next-token loss on calibration text.

The text is the calibration corpus (`knowcomp.compress.calibration`): the data directory's
Wikipedia-derived passages by default, or a user's file, cut into blocks of `seqlen` tokens in
a seeded order. The token budget fixes how many blocks are read; each block is seen once. Only
the method's own parameters train; the compressed model stays frozen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from knowcomp.compress.calibration import DEFAULT_SOURCE, CalibrationSpec, build_calibration
from knowcomp.recovery.settings import RecoveryError

# one batch of token blocks [batch, seqlen] -> scalar loss
LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainSettings:
    """How much text recovery trains on, and in what order."""

    tokens: int = 32_768  # token budget: tokens // seqlen blocks, each seen once
    seqlen: int = 256
    batch_size: int = 4
    seed: int = 0
    calibration: str = DEFAULT_SOURCE  # `data` or a UTF-8 text file
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.seqlen < 2:
            raise RecoveryError(f"seqlen must be at least 2, got {self.seqlen}")
        if self.batch_size < 1:
            raise RecoveryError(f"batch size must be at least 1, got {self.batch_size}")
        if self.tokens < self.seqlen:
            raise RecoveryError(
                f"a token budget of {self.tokens} is less than one block of seqlen "
                f"{self.seqlen}; raise --tokens or lower --train-seqlen"
            )

    @property
    def blocks(self) -> int:
        return self.tokens // self.seqlen

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.blocks * self.seqlen, "seqlen": self.seqlen,
                "batch_size": self.batch_size, "seed": self.seed,
                "calibration": self.calibration}  # fmt: skip


@dataclass
class TrainLog:
    """What one training run did: steps, tokens, the loss of every step, seconds."""

    steps: int = 0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    parts: list[int] = field(default_factory=list)  # steps of each separate run (IDP's prompts)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "tokens": self.tokens, "seconds": round(self.seconds, 2),
                "first_loss": self.losses[0] if self.losses else None,
                "last_loss": self.losses[-1] if self.losses else None,
                "parts": self.parts or [self.steps],
                "losses": [round(x, 4) for x in self.losses]}  # fmt: skip


def training_blocks(tokenizer: Any, train: TrainSettings, shards: int = 1) -> list[torch.Tensor]:
    """The budget's token blocks in `shards` disjoint parts whose sizes differ by at most one."""
    if train.blocks < shards:
        raise RecoveryError(
            f"the token budget gives {train.blocks} block(s) of {train.seqlen} tokens, fewer than "
            f"the {shards} prompts to train; raise --tokens"
        )
    spec = CalibrationSpec(train.calibration, train.blocks, train.seqlen, train.seed,
                           train.data_dir)  # fmt: skip
    return list(torch.tensor_split(build_calibration(tokenizer, spec).tokens, shards))


def train(
    loss_fn: LossFn,
    params: Iterable[torch.nn.Parameter],
    blocks: torch.Tensor,
    *,
    lr: float,
    weight_decay: float = 0.0,
    batch_size: int,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> TrainLog:
    """One pass of AdamW over `blocks` in seeded order; `progress(tokens, loss)` per step."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise RecoveryError("nothing to train: the method attached no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    log, start = TrainLog(), time.perf_counter()
    for step in range(math.ceil(len(blocks) / batch_size)):
        batch = blocks[order[step * batch_size : (step + 1) * batch_size]]
        loss = loss_fn(batch)
        if not torch.isfinite(loss):
            raise RecoveryError(
                f"the training loss became {loss.item()} at step {step + 1}; lower the lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.steps += 1
        log.tokens += batch.numel()
        log.losses.append(float(loss.detach()))
        if progress is not None:
            progress(batch.numel(), log.losses[-1])
    log.seconds = time.perf_counter() - start
    return log
