"""What a study's recover steps will cost to train, measured before it runs (`--dry-run`).

A recover step (LoRA, prompt or prefix tuning, IDP) is one pass of AdamW over its token
budget: `ceil(blocks / batch_size)` optimizer steps per training run, where IDP trains one run
per prompt (on the whole budget with `budget=each`, on its share with `budget=split`). Its
time is a fixed part (building the token blocks, wrapping the model in peft) plus the steps
times the time of one step, and one step costs about the same whatever the budget: so the
estimate trains the trial's own method with its own settings (sequence length, batch size,
prompt lengths, LoRA rank and group) on the actual model and device for a few steps per run,
after one untimed warm-up run of one step per run, and scales the measured time per step by
the step count the trial's budget implies (`implied_steps`).

The measuring runs train on the uncompressed model (the trial's compression is not applied
during the dry run; a calibrated one would take minutes). Pruning leaves dense kernels as fast,
so its trials take the measured time; a quantized sweep's forward-speed factor (`study.cost`)
scales the steps as well, which assumes the backward pass slows like the forward. A trial
whose adapter the study saved already (`recovery.save_adapters`) loads it and trains nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

MEASURED_STEPS = 3  # optimizer steps per measuring run (after a one-step warm-up run)


@dataclass(frozen=True)
class TrainingRate:
    """One recover setting's measured training cost on the uncompressed model."""

    recover: str  # the method, as the trial names it
    seconds_per_step: float
    fixed: float  # seconds a training run costs whatever its length
    measured_steps: int  # optimizer steps the timed run took


@dataclass(frozen=True)
class TrainingEstimate:
    """A trial's training: the steps its budget implies and their estimated time."""

    steps: int
    seconds: float
    how: str  # "measured", or why it trains nothing ("saved adapter")

    def describe(self) -> str:
        if self.steps == 0:
            return self.how
        return f"{self.steps:,} steps ({self.how})"


def implied_steps(settings: Any, train: Any) -> int:
    """Optimizer steps `recovery.recover` takes for method `settings` on `train`'s budget
    (`recovery.TrainSettings`), as `recovery.training.train` counts them."""
    per_run = lambda blocks: math.ceil(blocks / train.batch_size)  # noqa: E731
    if settings.method != "idp":
        return per_run(train.blocks)
    prompts = len(settings.lengths)
    if settings.budget == "each":
        return prompts * per_run(train.blocks)
    share, extra = divmod(train.blocks, prompts)  # torch.tensor_split's shares
    return sum(per_run(share + (i < extra)) for i in range(prompts))


def _runs(settings: Any) -> int:
    """The separate training runs of a method (IDP: one per prompt)."""
    return len(settings.lengths) if settings.method == "idp" else 1


def _budget(train: Any, settings: Any, steps: int) -> Any:
    """`train` cut to `steps` full steps per training run."""
    from dataclasses import replace

    shares = _runs(settings) if settings.method == "idp" and settings.budget == "split" else 1
    return replace(train, tokens=train.seqlen * train.batch_size * steps * shares)


def measure_training(loaded: Any, recover: str, train: Any,
                     steps: int = MEASURED_STEPS) -> TrainingRate:  # fmt: skip
    """Train `recover` (a trial's method text) with `train`'s settings on `loaded` for a
    warm-up run of one step per run, then for `steps` steps per run, timing each step from
    the end of the one before it in the same run (the first step of a run, with its one-time
    work, falls in the fixed part). The model's weights are untouched (recovery trains
    adapters only)."""
    from knowcomp.recovery import parse_method
    from knowcomp.recovery import recover as train_adapter

    settings = parse_method(recover)
    train_adapter(loaded, settings, _budget(train, settings, 1))  # warm-up, untimed
    ends: list[float] = []
    start = time.perf_counter()
    train_adapter(loaded, settings, _budget(train, settings, steps),
                  lambda _tokens, _loss: ends.append(time.perf_counter()))  # fmt: skip
    wall = time.perf_counter() - start
    runs = [ends[i : i + steps] for i in range(0, len(ends), steps)]  # `steps` each
    gaps = [b - a for run in runs for a, b in pairwise(run)]
    per_step = sum(gaps) / len(gaps) if gaps else wall / max(len(ends), 1)
    return TrainingRate(recover, per_step, max(wall - per_step * len(ends), 0.0), len(ends))


def estimate_training(rate: TrainingRate, settings: Any, train: Any,
                      factor: float = 1.0) -> TrainingEstimate:  # fmt: skip
    """The training time of a trial whose method is `settings` on budget `train`, from the
    measured `rate`, its steps slowed by the sweep's speed `factor`."""
    steps = implied_steps(settings, train)
    seconds = rate.fixed + factor * rate.seconds_per_step * steps
    return TrainingEstimate(steps, seconds, f"{rate.measured_steps} measured")


def saved_adapter(adapters: Path | None, trial_key: str) -> bool:
    """Whether the study saved this trial's adapter already (the worker loads it instead)."""
    from knowcomp.recovery.adapters import RECORD

    return adapters is not None and (adapters / trial_key / RECORD).is_file()
