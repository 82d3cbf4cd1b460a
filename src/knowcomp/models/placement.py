"""Where and in what precision a model runs: `device`, `dtype` and `device_map`, checked before
any model loads, so a study never stores a baseline and then dies on a device it cannot use."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

from knowcomp.errors import KnowcompError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's strategies
DEVICE_TYPES = ("cpu", "cuda", "mps")


class PlacementError(KnowcompError):
    """A device, dtype or device_map that this machine or this torch build cannot run."""


@dataclass(frozen=True)
class Placement:
    """A checked placement: the torch device the model's layers (or their first part) use."""

    device: torch.device
    dtype: torch.dtype
    device_map: str | None


def check_placement(device: str, dtype: str, device_map: str | None = None) -> Placement:
    """The placement, or a one-line `PlacementError` naming what is wrong and the fix."""
    if dtype not in DTYPES:
        raise PlacementError(f"unknown dtype '{dtype}'; choose one of: {', '.join(DTYPES)}")
    if device_map is not None:
        if device_map not in DEVICE_MAPS:
            raise PlacementError(
                f"device_map '{device_map}' is not supported; choose one of: "
                f"{', '.join(DEVICE_MAPS)} (placing modules by hand is not supported)"
            )
        if importlib.util.find_spec("accelerate") is None:
            raise PlacementError("device_map needs the accelerate package: pip install accelerate")
        cuda = torch.cuda.is_available()
        return Placement(torch.device("cuda:0" if cuda else "cpu"), DTYPES[dtype], device_map)
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise PlacementError(
            f"unknown device '{device}'; choose cpu, cuda, cuda:N or mps (or set device_map: auto)"
        )
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise PlacementError(
                f"device '{device}': this torch build or machine has no CUDA GPU; use device: cpu"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise PlacementError(
                f"device '{device}': only {torch.cuda.device_count()} CUDA GPU(s) here "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise PlacementError(f"device '{device}': MPS (Apple GPU) is not available here; "
                             "use device: cpu")  # fmt: skip
    return Placement(parsed, DTYPES[dtype], None)


@dataclass(frozen=True)
class ChosenPlacement:
    """The device and dtype a command runs on, checked, with `auto` resolved."""

    device: str
    dtype: str
    device_map: str | None

    def load_kwargs(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, "device_map": self.device_map}

    def record(self) -> dict[str, str]:
        """What a result records of where it was computed."""
        where = {"device": self.device, "dtype": self.dtype}
        return {**where, "device_map": self.device_map} if self.device_map else where


def resolve_auto(device: str, dtype: str) -> tuple[str, str]:
    """`auto` resolved: a CUDA GPU when there is one, else the CPU; float32 (the studies'
    numbers) unless another dtype is asked for."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, "float32" if dtype == "auto" else dtype


def choose_placement(
    device: str, dtype: str, device_map: str | None, recipe: Any = None
) -> ChosenPlacement:
    """Resolve `auto`, check the placement and every recipe step's needs before any model
    loads (a one-line error naming the fix otherwise)."""
    device, dtype = resolve_auto(device, dtype)
    placement = check_placement(device, dtype, device_map)
    problem = recipe and recipe.placement_problem(placement.device, placement.dtype)
    if problem:
        raise KnowcompError(problem)
    return ChosenPlacement(device, dtype, device_map)
