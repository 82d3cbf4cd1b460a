"""Options that several commands share, declared once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

add_bos_option = click.option(
    "--add-bos",
    type=click.Choice(["auto", "true", "false"]),
    default=None,
    help="A BOS token first in a decoder's inputs: auto (where its tokenizer adds one by "
    "default, as lm-evaluation-harness does; the default), true or false.",
)


batch_tokens_option = click.option(
    "--batch-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Padded tokens per probe batch (a study spec's batch_tokens). Default: the device's "
    "(CPU: 512 for decoders and encoders, 8192 for encoder-decoders, 2048 when generating; "
    "CUDA: scaled to the free memory). On out-of-memory, batches are halved and retried.",
)


def placement_options(command):
    """`--device`, `--dtype` and `--device-map`, as a study spec's `device`, `dtype` and
    `device_map` keys."""
    from knowcomp.models.placement import DEVICE_MAPS

    command = click.option(
        "--device-map", type=click.Choice(DEVICE_MAPS), default=None,
        help="Spread the model's layers over the devices accelerate sees (for a model larger "
        "than one device); --device is then ignored.",
    )(command)  # fmt: skip
    command = click.option(
        "--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
        default="auto", show_default=True,
        help="Weights and activations: auto is float32 (the studies' numbers); bfloat16 runs "
        "about 1.75x faster on a CPU (see BENCHMARKS.md).",
    )(command)  # fmt: skip
    return click.option(
        "--device", default="auto", show_default=True,
        help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps.",
    )(command)  # fmt: skip


@dataclass(frozen=True)
class ChosenPlacement:
    """The device and dtype a command runs on, checked, with `auto` resolved."""

    device: str
    dtype: str
    device_map: str | None

    def load_kwargs(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, "device_map": self.device_map}


def choose_placement(
    device: str, dtype: str, device_map: str | None, recipe: Any = None
) -> ChosenPlacement:
    """Resolve `auto`, check the placement and every recipe step's needs before any model
    loads (a one-line error naming the fix otherwise)."""
    import torch

    from knowcomp.errors import KnowcompError
    from knowcomp.models.placement import check_placement

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "float32" if dtype == "auto" else dtype
    placement = check_placement(device, dtype, device_map)
    problem = recipe and recipe.placement_problem(placement.device, placement.dtype)
    if problem:
        raise KnowcompError(problem)
    return ChosenPlacement(device, dtype, device_map)
