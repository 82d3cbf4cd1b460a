"""`knowcomp compress`: apply a recipe, report what changed, optionally save the model."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from knowcomp.cli.format import console, err_console, human_bytes
from knowcomp.cli.options import (
    calibration_options,
    calibration_spec,
    force_option,
    placement_options,
    recipe_option,
)
from knowcomp.cli.progress import compression_progress
from knowcomp.errors import KnowcompError
from knowcomp.models.placement import choose_placement

EXAMPLE = "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:all_linear"


@click.command()
@click.argument("model")
@recipe_option(
    required=True,
    help=f"Steps kind:method:group[:level][:opt=val], comma-separated (e.g. {EXAMPLE}), "
    "a YAML file, or a named recipe (overall-gpq). See `knowcomp methods`.",
)
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Save the compressed model.")
@click.option("--seed", default=0, show_default=True, help="Seed for random methods.")
@force_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@calibration_options
@placement_options
def compress(
    model: str,
    recipe: str,
    out: Path | None,
    seed: int,
    force: bool,
    as_json: bool,
    calibration: Path | None,
    nsamples: int,
    calibration_seqlen: int,
    device: str,
    dtype: str,
    device_map: str | None,
) -> None:
    """Compress MODEL with a recipe and show, per group, what changed.

    Sparsity is counted from the weights after compression, per recipe group, over the layers
    the recipe compressed, and over all linear layers (the LM head included); weights that were
    already zero before compression are counted apart. Sizes are given dense and in a
    compressed layout (sparse mask + non-zeros). With --out, the model is saved (pruned models
    load with plain transformers, quantized ones with knowcomp) with knowcomp.json beside it.
    Calibrated methods read --nsamples blocks of --calibration-seqlen tokens of calibration
    text, ordered by --seed.
    """

    from knowcomp.compress import parse_recipe
    from knowcomp.compress.drift import output_drift, probe_logits
    from knowcomp.models.sources import resolve
    from knowcomp.pipeline import Pipeline

    parsed = parse_recipe(recipe)  # every check that needs no model happens before loading
    placement = choose_placement(device, dtype, device_map, parsed)
    spec = calibration_spec(calibration, nsamples, calibration_seqlen, seed, None)
    resolve(model)
    if out is not None:
        _check_out_dir(out, force)
    with err_console.status(f"loading {model}"):  # without a tokenizer, a note says what is skipped
        pipeline = Pipeline(model, placement=placement, calibration=spec, require_tokenizer=False)
    loaded = pipeline.loaded
    with err_console.status("preparing"):
        pipeline.plan(parsed, seed)  # checks against this model, before any weight changes
    before = (
        probe_logits(loaded.model, loaded.tokenizer, loaded.family) if loaded.tokenizer else None
    )
    with compression_progress() as progress:
        report = pipeline.compress(parsed, seed, progress).report
    if before is not None:
        drift = output_drift(before, probe_logits(loaded.model, loaded.tokenizer, loaded.family))
        report.notes.append(
            f"on a fixed probe text ({drift.positions} positions), "
            f"{100 * drift.top1_agreement:.1f}% of top-1 predictions are unchanged; "
            f"mean KL to the original {drift.mean_kl:.4f} nats"
        )
    if out is not None:
        from knowcomp.compress.saving import save_compressed

        with err_console.status(f"saving to {out}"):
            save_compressed(loaded, report, out)
    if as_json:
        click.echo(report.to_json())
    else:
        _print_report(report, loaded.notes)
        if out is not None:
            console.print(f"saved to {out} (report in {out / 'knowcomp.json'})")


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise KnowcompError(f"--out '{out}' is a file; compress saves a folder: give a folder path")
    if out.exists() and any(out.iterdir()) and not force:
        raise KnowcompError(
            f"output folder '{out}' exists and is not empty; choose another --out or add --force"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".knowcomp-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise KnowcompError(
            f"cannot write to '{out}' ({err.strerror}); choose another --out"
        ) from None


def _print_report(report, load_notes: list[str]) -> None:
    console.print(f"[bold]{report.model}[/] ({report.family}), seed {report.seed}: {report.recipe}")
    table = Table(
        caption="Sparsity = weights exactly zero after, over the row's layers; Zero before = "
        "of the row's weights, those zero before compression. Sizes of the linear layers: "
        "Before = dense float; Dense = after, dense at the stored bit width; Packed = after, "
        "pruned weights stored as mask + non-zeros.",
        caption_justify="left",
    )
    columns = ("Group", "Steps", "Layers", "Sparsity", "Zero before", "Quantized", "Before",
               "Dense", "Packed")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("Group", "Steps") else "right")
    # below the groups: the union of the compressed layers (when it is neither one group nor
    # every layer), then every linear layer
    summary = [report.total]
    if len(report.groups) > 1 and report.compressed.layers < report.total.layers:
        summary.insert(0, report.compressed)
    for g in [*report.groups, *summary]:
        if g is summary[0]:
            table.add_section()
        table.add_row(
            g.group,
            " → ".join(m.split("(")[0] for m in g.methods),
            str(g.layers),
            f"{100 * g.sparsity:.2f}%",
            f"{100 * g.sparsity_before:.2f}%",
            str(g.quantized_modules),
            human_bytes(g.bytes_before),
            human_bytes(g.bytes_after_dense),
            human_bytes(g.bytes_after_compressed),
        )
    console.print(table)
    console.print(f"headline: {report.headline()}", highlight=False)
    if len(report.step_zeros) > 1:  # a group row sums its steps; here each step on its own
        for step in report.step_zeros:
            console.print(f"  {step.describe()}", highlight=False)
    for note in [*load_notes, *report.notes]:
        console.print(f"[yellow]note:[/] {note}")
