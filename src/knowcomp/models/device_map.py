"""Device maps planned before any weight loads: which layers go to which GPU, and which to CPU.

With `device_map` set, knowcomp plans the map itself, with accelerate's own planner
(`infer_auto_device_map`, after `get_balanced_memory` for the balanced strategies, as
transformers does for `device_map="auto"`) on an empty copy of the model built on the `meta`
device, so that no weight is allocated. Planning first lets knowcomp refuse, in one line and
before loading, a map that would put layers on disk (accelerate's last resort, which makes
every forward read them back from disk), and record the map that was used.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from itertools import groupby
from typing import Any

import torch

from knowcomp.models.placement import PlacementError

DeviceMap = dict[str, int | str]


def plan_device_map(
    config: Any,
    model_class: Any,
    dtype: torch.dtype,
    strategy: str = "auto",
    max_memory: dict[int | str, int | str] | None = None,
) -> DeviceMap:
    """Where each of `model_class(config)`'s modules goes under `strategy` ("auto",
    "balanced", "balanced_low_0" or "sequential"), within `max_memory` (default: what
    accelerate finds free on this machine's GPUs and CPU). A one-line `PlacementError` if any
    module would be offloaded to disk."""
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory, get_max_memory

    with init_empty_weights(), _quiet_accelerate():
        model = model_class.from_config(config, dtype=dtype)
        no_split = sorted(getattr(model, "_no_split_modules", None) or [])
        memory = dict(max_memory) if max_memory is not None else get_max_memory()
        common = {"no_split_module_classes": no_split, "dtype": dtype}
        if strategy != "sequential":
            low_zero = strategy == "balanced_low_0"
            memory = get_balanced_memory(model, memory, low_zero=low_zero, **common)
        device_map = dict(infer_auto_device_map(model, max_memory=memory, **common))
    on_disk = [name for name, device in device_map.items() if device == "disk"]
    if on_disk:
        needed = sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8
        raise PlacementError(
            f"device_map {strategy}: the model ({needed / 2**30:.1f} GiB in {_dtype(dtype)}) "
            f"does not fit in the memory of {describe_memory(memory)}, and {len(on_disk)} of "
            "its modules would be offloaded to disk; use bfloat16, a smaller model, or a "
            "machine with more GPU or CPU memory"
        )
    return device_map


def describe_device_map(device_map: DeviceMap) -> str:
    """`cuda:0 model.embed_tokens..model.layers.18 (20 modules); cpu lm_head (1 module)`:
    each run of consecutive modules on one device."""
    parts = []
    for device, run in groupby(device_map.items(), key=lambda item: item[1]):
        names = [name or "the whole model" for name, _ in run]
        span = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        count = f"{len(names)} module{'s' if len(names) > 1 else ''}"
        parts.append(f"{_device(device)} {span} ({count})")
    return "; ".join(parts)


def describe_memory(memory: dict[int | str, int | str]) -> str:
    return ", ".join(f"{_device(d)} {_gib(m)}" for d, m in memory.items())


def _device(device: int | str) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def _gib(value: int | str) -> str:
    return value if isinstance(value, str) else f"{value / 2**30:.1f} GiB"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@contextmanager
def _quiet_accelerate():
    """accelerate logs a warning for each device in `max_memory` that this machine lacks
    (a plan for GPUs made on a CPU machine); the plan itself is what was asked."""
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
