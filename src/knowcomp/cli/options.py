"""Options that several commands share, declared once."""

from __future__ import annotations

import click

add_bos_option = click.option(
    "--add-bos",
    type=click.Choice(["auto", "true", "false"]),
    default=None,
    help="A BOS token first in a decoder's inputs: auto (where its tokenizer adds one by "
    "default, as lm-evaluation-harness does; the default), true or false.",
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
