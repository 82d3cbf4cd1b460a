"""`knowcomp recover`: compress, then train a recovery method, and compare on the probes."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from knowcomp.cli.format import console, err_console
from knowcomp.cli.options import (
    batch_tokens_option,
    calibration_options,
    calibration_spec,
    data_dir_option,
    force_option,
    placement_options,
    recipe_option,
)
from knowcomp.cli.progress import RichDisplay
from knowcomp.cli.recover_ablation import check_ablation, print_ablation
from knowcomp.models.placement import choose_placement

EXAMPLE = "gptq:overall:bits=4"


def _help_methods(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from knowcomp.recovery.settings import settings_help

    click.echo(settings_help())
    ctx.exit()


@click.command()
@click.argument("model")
@recipe_option(
    required=True,
    help=f"Compression recipe to recover from (e.g. quant:{EXAMPLE}); see `knowcomp methods`.",
)
@click.option(
    "--method",
    "-m",
    required=True,
    help="lora, prompt, prefix or idp, with options as method:key=value "
    "(e.g. idp:tokens=26+100); method:paper for the ICML 2024 study's settings "
    "(lora:paper). See --help-methods.",
)
@click.option(
    "--help-methods",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_help_methods,
    help="List every method's options and defaults, then exit.",
)
@click.option(
    "--tokens",
    default=32_768,
    show_default=True,
    type=click.IntRange(min=2),
    help="Training token budget (each block is seen once; IDP trains each prompt on all of "
    "it, or with budget=split on a share).",
)
@click.option(
    "--train-seqlen",
    default=256,
    show_default=True,
    type=click.IntRange(min=2),
    help="Tokens per training block (calibration blocks are --calibration-seqlen).",
)
@click.option(
    "--batch-size",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Blocks per training step.",
)
@click.option("--lr", type=float, help="Learning rate (default: the method's, see --help-methods).")
@click.option(
    "--seed",
    default=0,
    show_default=True,
    help="Seed for the text order, initial values and --limit subsets.",
)
@calibration_options
@click.option("--probes", "-p", help="Probes to compare on, e.g. lama-trex,piqa (default: none).")
@click.option("--limit", type=click.IntRange(min=1), help="Items per relation (LAMA) or per task.")
@data_dir_option
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="Save the adapter here (peft's format; knowcomp-recovery.json beside it).",
)
@force_option
@click.option(
    "--latency/--no-latency",
    default=True,
    show_default=True,
    help="Time a forward batch (4 x 128 tokens) uncompressed, compressed, recovered and with LoRA.",
)
@click.option(
    "--ablation",
    is_flag=True,
    help="With -m idp and --probes: also score each prompt alone and their concatenation "
    "(the ICML 2024 study's Table 3).",
)
@placement_options
@batch_tokens_option
def recover(
    model: str,
    recipe: str,
    method: str,
    tokens: int,
    train_seqlen: int,
    batch_size: int,
    lr: float | None,
    seed: int,
    calibration: Path | None,
    nsamples: int,
    calibration_seqlen: int,
    probes: str | None,
    limit: int | None,
    data_dir: Path | None,
    out: Path | None,
    force: bool,
    latency: bool,
    ablation: bool,
    device: str,
    dtype: str,
    device_map: str | None,
    batch_tokens: int | None,
) -> None:
    """Compress MODEL, then recover knowledge with LoRA, prompt tuning, prefix tuning or IDP.

    Trains on the calibration text with next-token loss (only the method's parameters
    train), saves the adapter with --out, and with --probes prints each probe and category
    average for the uncompressed, compressed and recovered model. Evaluate a saved adapter
    later with `knowcomp eval MODEL --adapter DIR`.
    """
    from dataclasses import replace

    from knowcomp.cli.compress_cmd import _check_out_dir
    from knowcomp.compress import parse_recipe
    from knowcomp.models.sources import resolve
    from knowcomp.pipeline import Pipeline
    from knowcomp.pipeline.recovery import run_recovery
    from knowcomp.probes.base import RunOptions
    from knowcomp.probes.registry import parse_probe_list
    from knowcomp.recovery import TrainSettings, parse_method
    from knowcomp.recovery.methods import check_recipe_trainable

    settings = parse_method(method)
    if ablation:
        check_ablation(method, probes)
    if lr is not None:
        settings = replace(settings, lr=lr)
    calibration_text = calibration_spec(calibration, nsamples, calibration_seqlen, seed, data_dir)
    train = TrainSettings(tokens, train_seqlen, batch_size, seed, calibration_text.source,
                          calibration_text.data_dir)  # fmt: skip
    parsed = parse_recipe(recipe)
    placement = choose_placement(device, dtype, device_map, parsed)
    check_recipe_trainable(parsed, on_cpu=placement.device == "cpu")
    chosen = parse_probe_list(probes) if probes else []
    options = RunOptions(limit=limit, seed=seed, data_dir=data_dir, max_tokens=batch_tokens)
    for probe in chosen:
        probe.count(options)  # a missing dataset fails here, before loading
    resolve(model)
    if out is not None:
        _check_out_dir(out, force)
    with err_console.status(f"loading {model}"):
        pipeline = Pipeline(
            model, placement=placement, data_dir=data_dir, calibration=calibration_text
        )

    def compressed(report) -> None:
        console.print(f"compressed with {report.recipe}: {report.headline()}", highlight=False)

    run = run_recovery(
        pipeline, parsed, settings, train, chosen, options, latency=latency,
        display=RichDisplay(), on_compressed=compressed, ablation=ablation,
    )  # fmt: skip
    adapter = run.adapter
    _print_training(adapter)
    if run.stages:
        _print_comparison(run.stages)
    if run.timing:
        _print_latency(run.timing)
    table = print_ablation(run.ablation) if run.ablation else None
    if out is not None:
        adapter.info.results = _summary(run.stages, run.timing)
        if table is not None:
            adapter.info.results["ablation"] = table
        adapter.info.placement = placement.record()
        adapter.save(out, pipeline.loaded.model)
        console.print(f"adapter saved to {out} (record in {out / 'knowcomp-recovery.json'})")


def _print_training(adapter) -> None:
    info, log = adapter.info, adapter.info.log
    runs, at = [], 0
    for steps in log.get("parts") or [log["steps"]]:  # IDP: one run per prompt
        losses = log["losses"][at : at + steps]
        runs.append(f"{losses[0]:.3f} -> {losses[-1]:.3f}")
        at += steps
    what = "loss (first -> last step)" + (" per prompt" if len(runs) > 1 else "")
    console.print(
        f"[bold]{info.method}[/] ({info.settings}): {info.trainable_params:,} trainable "
        f"parameters; {log['tokens']:,} tokens in {log['steps']} steps, {log['seconds']:.0f} s; "
        f"{what} {', '.join(runs)}"
    )


def _print_comparison(stages: dict[str, list]) -> None:
    from knowcomp.analysis.compare import headline_drop, share_intervals, stage_rows

    names = list(stages)
    table = Table(
        title="Knowledge before and after recovery (headline metric per probe)",
        title_justify="left",
    )
    table.add_column("Probe")
    for name in stages:
        table.add_column(name, justify="right")
    drops = [n for n in names[1:] if "uncompressed" in stages]
    for name in drops:
        table.add_column(f"{name} drop [95%]", justify="right")
    table.add_column("recovered", justify="right")
    shares = share_intervals(stages)
    for i, (label, scores) in enumerate(stage_rows(stages)):
        base, compressed, recovered = scores
        cells = []
        for name in drops:
            probe_row = i < len(stages["uncompressed"])
            drop = headline_drop(stages["uncompressed"][i], stages[name][i]) if probe_row else None
            cells.append("" if drop is None else drop.describe())
        share = _share(base, compressed, recovered)
        if share and label in shares:
            share += f" {shares[label]}"
        table.add_row(label, *[_fmt(s) for s in scores], *cells, share)
    console.print(table)
    console.print(
        "drop: uncompressed minus this stage on the same items, in points, with its paired 95% "
        "interval (McNemar / Agresti-Min; relation-clustered for LAMA). recovered = (recovered "
        "- compressed) / (uncompressed - compressed), where compression lost something, with "
        "its bootstrap interval where the loss is clearly above zero",
        highlight=False,
    )


def _share(base, compressed, recovered) -> str:
    from knowcomp.analysis.intervals import recovered_share

    share = recovered_share(base, compressed, recovered)
    return "" if share is None else f"{100 * share:+.0f}%"


def _print_latency(timing: dict[str, float]) -> None:
    table = Table(
        title="Latency per forward batch (4 x 128 tokens, median of 3)", title_justify="left"
    )
    for col in ("Model", "ms", "vs uncompressed"):
        table.add_column(col, justify="left" if col == "Model" else "right")
    ref = timing.get("uncompressed")
    for name, seconds in timing.items():
        table.add_row(name, f"{1000 * seconds:.1f}", f"{seconds / ref:.2f}x" if ref else "")
    console.print(table)


def _summary(stages: dict[str, list], timing: dict[str, float]) -> dict:
    from knowcomp.analysis.compare import stage_rows

    return {
        "scores": {
            label: dict(zip(stages, scores, strict=True)) for label, scores in stage_rows(stages)
        }
        if stages
        else {},
        "latency_ms": {name: round(1000 * s, 2) for name, s in timing.items()},
    }


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
