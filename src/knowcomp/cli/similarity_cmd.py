"""`knowcomp similarity`: per-layer cosine similarity of a compressed model to the original."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from knowcomp.cli.format import console, err_console, human_bytes
from knowcomp.cli.options import (
    calibration_options,
    calibration_spec,
    data_dir_option,
    placement_options,
    recipe_option,
)
from knowcomp.cli.progress import compression_progress
from knowcomp.errors import KnowcompError
from knowcomp.models.placement import choose_placement

OUT_SUFFIXES = (".csv", ".json")


@click.command()
@click.argument("model")
@recipe_option(
    required=False,
    help="The compression to compare with the uncompressed model: steps "
    "kind:method:group[:level], comma-separated, a YAML file, or a named recipe. "
    "See `knowcomp methods`.",
)
@click.option(
    "--texts",
    type=click.Path(path_type=Path, dir_okay=False),
    help="UTF-8 text file, one text per paragraph (paragraphs split at blank lines). "
    "Default: LAMBADA passages from the data directory, a sample chosen by --seed.",
)
@click.option(
    "--limit", "-n", default=16, show_default=True, help="Number of texts (the first N of --texts)."
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the per-layer values to a .csv or .json file.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for random methods and texts.")
@click.option("--max-length", default=128, show_default=True, help="Tokens per text, at most.")
@click.option("--batch-size", default=8, show_default=True, help="Texts per forward pass.")
@click.option(
    "--adapter",
    type=click.Path(path_type=Path, file_okay=False),
    help="Compare with a recovery adapter saved by `knowcomp recover --out` attached (its "
    "recipe is applied first unless --recipe is given), as Fig. 5 does for recovered models.",
)
@calibration_options
@data_dir_option
@placement_options
def similarity(
    model: str,
    recipe: str,
    texts: Path | None,
    limit: int,
    out: Path | None,
    seed: int,
    max_length: int,
    batch_size: int,
    adapter: Path | None,
    calibration: Path | None,
    nsamples: int,
    calibration_seqlen: int,
    data_dir: Path | None,
    device: str,
    dtype: str,
    device_map: str | None,
) -> None:
    """Compare MODEL compressed with a recipe to MODEL itself, layer by layer.

    For each layer: the mean cosine similarity of the attention maps (each head's attention
    row over the input tokens, compared per query token) and of the hidden activations (the
    layer's output per token), between the compressed and the uncompressed model on the same
    texts, as in Fig. 5 of Do Compressed LLMs Forget Knowledge? (Hoang et al., 2024). 1.0 means
    unchanged. The model is loaded once: the uncompressed pass runs first and keeps its
    outputs, then the recipe compresses the model in place. Calibrated methods (gptq,
    sparsegpt, wanda) read --calibration. With --adapter, the compressed model is compared
    with the adapter attached.
    """
    from knowcomp.analysis import default_texts, make_batches, read_texts
    from knowcomp.compress import parse_recipe
    from knowcomp.models.sources import resolve
    from knowcomp.pipeline import Pipeline

    if adapter is not None:
        from knowcomp.recovery.adapters import adapter_record

        recipe = recipe or adapter_record(adapter).recipe or None
    if recipe is None:
        raise KnowcompError("give --recipe (or --adapter): the compression to compare with")
    parsed = parse_recipe(recipe)  # every check that needs no model happens before loading
    placement = choose_placement(device, dtype, device_map, parsed)
    if limit < 1 or max_length < 1 or batch_size < 1:
        raise KnowcompError("--limit, --max-length and --batch-size must be at least 1")
    if out is not None:
        _check_out(out)
    chosen = (
        read_texts(texts, limit) if texts else default_texts(limit, seed=seed, data_dir=data_dir)
    )
    source = f"'{texts}'" if texts else "LAMBADA passages"
    resolve(model)
    spec = calibration_spec(calibration, nsamples, calibration_seqlen, seed, data_dir)
    with err_console.status(f"loading {model}"):
        pipeline = Pipeline(model, placement=placement, data_dir=data_dir, calibration=spec)
    with err_console.status("preparing"):
        pipeline.plan(parsed, seed)  # checks against this model, before any weight changes
    loaded = pipeline.loaded
    batches = make_batches(loaded.tokenizer, chosen, batch_size=batch_size, max_length=max_length)
    with _progress() as bar:
        task = bar.add_task("uncompressed", total=len(chosen))
        reference = pipeline.reference_states(batches, progress=lambda n: bar.advance(task, n))
    with compression_progress() as progress:
        report = pipeline.compress(parsed, seed, progress).report
    attached = pipeline.load_adapter(adapter) if adapter is not None else None
    stage = "compressed" if attached is None else f"compressed + {attached.method}"
    with _progress() as bar:
        task = bar.add_task(stage, total=len(chosen))
        result = pipeline.similarity(
            reference, adapter=attached, progress=lambda n: bar.advance(task, n)
        )
    what = recipe if attached is None else f"{recipe} + {attached.method} ({adapter})"
    _print(model, what, result, source, reference.nbytes)
    for note in [*loaded.notes, *report.notes, *result.notes]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if out is not None:
        _write(out, {"model": model, "recipe": recipe, "adapter": str(adapter) if adapter else None,
                     **placement.record()}, result)  # fmt: skip
        console.print(f"written to {out}", highlight=False)


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise KnowcompError(f"--out '{out}' must end in .csv or .json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KnowcompError(f"cannot create the folder of '{out}' ({err.strerror})") from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise KnowcompError(f"'{out}' is not writable; choose another --out")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err_console, transient=True,
    )  # fmt: skip


def _print(model: str, recipe: str, result, source: str, kept: int) -> None:
    console.print(f"[bold]{model}[/]: {recipe}", highlight=False)
    table = Table()
    for col in ("Layer", "Attention cosine", "Hidden cosine"):
        table.add_column(col, justify="right")
    for layer in result.layers:
        attention = "–" if layer.attention_cosine is None else f"{layer.attention_cosine:.4f}"
        table.add_row(str(layer.layer), attention, f"{layer.hidden_cosine:.4f}")
    console.print(table)
    console.print(
        f"Mean cosine similarity to the uncompressed model ({result.stack} layers; 1.0 = "
        f"unchanged) on {result.texts} texts from {source}, {result.tokens} tokens. "
        f"Uncompressed outputs kept in memory: {human_bytes(kept)}.",
        highlight=False,
        markup=False,
    )


def _write(out: Path, record: dict, result) -> None:
    try:
        if out.suffix.lower() == ".json":
            payload = {**record, **result.to_dict()}
            out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
            return
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, ["layer", "attention_cosine", "hidden_cosine", "texts"],
                lineterminator="\n",
            )  # fmt: skip
            writer.writeheader()
            writer.writerows(result.rows())
    except OSError as err:
        raise KnowcompError(
            f"cannot write '{out}' ({err.strerror}); choose another --out"
        ) from None
