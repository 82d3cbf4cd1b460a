"""Options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
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


def _precision(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from knowcomp.pipeline.adaptive import check_precision

    return None if value is None else check_precision(value)


precision_option = click.option(
    "--precision",
    callback=_precision,
    metavar="POINTS",
    help="Adaptive evaluation: score items in a seeded random order, chunk by chunk, and stop "
    "a probe once the 95% confidence sequence of its drop against the baseline has a "
    "half-width of at most POINTS (or the items run out); see docs/statistics.md.",
)


def placement_options(command=None, *, spec: bool = False):
    """`--device`, `--dtype` and `--device-map`, as a study spec's `device`, `dtype` and
    `device_map` keys; with `spec=True` (`knowcomp run`) they default to the spec's."""
    if command is None:
        return lambda c: placement_options(c, spec=spec)
    from knowcomp.models.placement import DEVICE_MAPS

    replaces = " Replaces the spec's." if spec else ""
    command = click.option(
        "--device-map", type=click.Choice(DEVICE_MAPS), default=None,
        help="Spread the model's layers over the devices accelerate sees (for a model larger "
        f"than one device); --device is then ignored.{replaces}",
    )(command)  # fmt: skip
    command = click.option(
        "--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
        default=None if spec else "auto", show_default=not spec,
        help="Weights and activations: auto is float32 (the studies' numbers); bfloat16 runs "
        f"about 1.75x faster on a CPU (see BENCHMARKS.md).{replaces}",
    )(command)  # fmt: skip
    return click.option(
        "--device", default=None if spec else "auto", show_default=not spec,
        help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N or "
        f"mps.{replaces}",
    )(command)  # fmt: skip


def recipe_option(*, required: bool, help: str):
    """`--recipe/-r`: steps kind:method:group[:level][:opt=val], a YAML file or a named recipe."""
    return click.option("--recipe", "-r", required=required, help=help)


force_option = click.option(
    "--force", is_flag=True, help="Let --out replace or write into what is already there."
)

data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), help="Data directory to read."
)


def calibration_options(command):
    """`--calibration`, `--nsamples` and `--calibration-seqlen`: the text calibrated methods
    (gptq, sparsegpt, wanda) read, as a study spec's `calibration` keys."""
    command = click.option(
        "--calibration-seqlen", default=512, show_default=True, type=click.IntRange(min=2),
        help="Tokens per calibration block.",
    )(command)  # fmt: skip
    command = click.option(
        "--nsamples", default=64, show_default=True, type=click.IntRange(min=1),
        help="Calibration blocks for calibrated methods (gptq, sparsegpt, wanda).",
    )(command)  # fmt: skip
    return click.option(
        "--calibration", type=click.Path(path_type=Path, dir_okay=False),
        help="Calibration text: a UTF-8 file (paragraphs split at blank lines), or "
        "data:NAME[,NAME] for some of the data directory's sources (lama-trex-evidence, "
        "boolq, sciq); default: all three. data:boolq,sciq keeps LAMA's facts out of it.",
    )(command)  # fmt: skip


def calibration_spec(
    calibration: Path | None, nsamples: int, seqlen: int, seed: int, data_dir: Path | None
) -> Any:
    """The `CalibrationSpec` the calibration options describe."""
    from knowcomp.compress.calibration import DEFAULT_SOURCE, CalibrationSpec

    source = str(calibration) if calibration else DEFAULT_SOURCE
    return CalibrationSpec(source, nsamples, seqlen, seed, str(data_dir) if data_dir else None)
