"""`knowcomp recover`: compress, then train a recovery method, and compare on the probes."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from knowcomp.cli.format import console, err_console
from knowcomp.cli.progress import compression_progress

EXAMPLE = "gptq:overall:bits=4"


def _help_methods(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from knowcomp.recovery.settings import settings_help

    click.echo(settings_help())
    ctx.exit()


@click.command()
@click.argument("model")
@click.option(
    "--recipe",
    "-r",
    required=True,
    help=f"Compression recipe to recover from (e.g. quant:{EXAMPLE}); see `knowcomp methods`.",
)
@click.option(
    "--method",
    "-m",
    required=True,
    help="lora, prompt, prefix or idp, with options as method:key=value "
    "(e.g. idp:prompts=4:tokens=10). See --help-methods.",
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
    help="Training token budget (each block is seen once; IDP splits it between its prompts).",
)
@click.option(
    "--seqlen",
    default=256,
    show_default=True,
    type=click.IntRange(min=2),
    help="Tokens per training block.",
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
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Text to train on (and to calibrate gptq/sparsegpt/wanda): a text file, or "
    "data:NAME[,NAME] for some of the data directory's sources (lama-trex-evidence, boolq, "
    "sciq); default: all three. data:boolq,sciq keeps LAMA's facts out of training.",
)
@click.option(
    "--nsamples",
    default=64,
    show_default=True,
    help="Calibration blocks for calibrated compression methods.",
)
@click.option("--probes", "-p", help="Probes to compare on, e.g. lama-trex,piqa (default: none).")
@click.option("--limit", type=click.IntRange(min=1), help="Items per relation (LAMA) or per task.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory to read.")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="Save the adapter here (peft's format; knowcomp-recovery.json beside it).",
)
@click.option("--force", is_flag=True, help="Write into --out even if it is not empty.")
@click.option(
    "--latency/--no-latency",
    default=True,
    show_default=True,
    help="Time a forward batch (4 x 128 tokens) uncompressed, compressed, recovered and with LoRA.",
)
def recover(
    model: str,
    recipe: str,
    method: str,
    tokens: int,
    seqlen: int,
    batch_size: int,
    lr: float | None,
    seed: int,
    calibration: Path | None,
    nsamples: int,
    probes: str | None,
    limit: int | None,
    data_dir: Path | None,
    out: Path | None,
    force: bool,
    latency: bool,
) -> None:
    """Compress MODEL, then recover knowledge with LoRA, prompt tuning, prefix tuning or IDP.

    Trains on the calibration text with next-token loss (only the method's parameters
    train), saves the adapter with --out, and with --probes prints each probe and category
    average for the uncompressed, compressed and recovered model. Evaluate a saved adapter
    later with `knowcomp eval MODEL --adapter DIR`.
    """
    from dataclasses import replace

    from knowcomp.cli.compress_cmd import _check_out_dir
    from knowcomp.cli.eval_cmd import run_probes
    from knowcomp.compress import CompressionSession, parse_recipe
    from knowcomp.compress.calibration import DEFAULT_SOURCE, CalibrationSpec
    from knowcomp.models import load_model
    from knowcomp.models.sources import resolve
    from knowcomp.probes.base import RunOptions
    from knowcomp.probes.registry import parse_probe_list
    from knowcomp.recovery import TrainSettings, parse_method
    from knowcomp.recovery import recover as train_recovery
    from knowcomp.recovery.methods import check_recipe_trainable, check_trainable

    settings = parse_method(method)
    if lr is not None:
        settings = replace(settings, lr=lr)
    source = str(calibration) if calibration else DEFAULT_SOURCE
    train_settings = TrainSettings(
        tokens, seqlen, batch_size, seed, source, str(data_dir) if data_dir else None
    )
    parsed = parse_recipe(recipe)
    check_recipe_trainable(parsed, on_cpu=True)  # knowcomp recover runs on CPU
    chosen = parse_probe_list(probes) if probes else []
    options = RunOptions(limit=limit, seed=seed, data_dir=data_dir)
    totals = [p.count(options) for p in chosen]  # a missing dataset fails here, before loading
    resolve(model)
    if out is not None:
        _check_out_dir(out, force)
    with err_console.status(f"loading {model}"):
        loaded = load_model(model)
    check_trainable(loaded)
    session = CompressionSession(
        loaded,
        calibration=CalibrationSpec(
            source, nsamples, 512, seed, str(data_dir) if data_dir else None
        ),
    )
    with err_console.status("preparing"):
        session.plan(parsed, seed=seed)
    stages: dict[str, list] = {}
    timing: dict[str, float] = {}
    from knowcomp.recovery.latency import forward_seconds, latency_batch

    batch = latency_batch(loaded.model.get_input_embeddings().num_embeddings, seed=seed)
    if chosen:
        stages["uncompressed"] = run_probes(loaded, chosen, totals, options, label="uncompressed ",
                                            baseline=True)  # fmt: skip
    if latency:
        timing["uncompressed"] = forward_seconds(loaded.model, batch)
    with compression_progress() as progress:
        report = session.apply(parsed, seed=seed, progress=progress)
    console.print(f"compressed with {report.recipe}: {report.headline()}", highlight=False)
    check_trainable(loaded)  # a recipe may have added layers without gradients
    if chosen:
        stages["compressed"] = run_probes(loaded, chosen, totals, options, label="compressed ")
    if latency:
        timing["compressed"] = forward_seconds(loaded.model, batch)
    adapter = _train(loaded, settings, train_settings, report.recipe, train_recovery)
    if out is not None:
        adapter.save(out, loaded.model)
    with adapter.attached(loaded.model):
        if chosen:
            stages["recovered"] = run_probes(loaded, chosen, totals, options, label="recovered ")
        if latency:
            timing[f"compressed + {adapter.method}"] = forward_seconds(loaded.model, batch)
    if latency and adapter.method != "lora":
        timing["compressed + lora"] = _lora_latency(loaded, batch, train_settings)
    _print_training(adapter)
    if chosen:
        _print_comparison(stages)
    if timing:
        _print_latency(timing)
    if out is not None:
        adapter.info.results = _summary(stages, timing)
        adapter.save(out, loaded.model)
        console.print(f"adapter saved to {out} (record in {out / 'knowcomp-recovery.json'})")


def _train(loaded, settings, train_settings, recipe: str, train_recovery):
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} tokens"),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        total = train_settings.blocks * train_settings.seqlen
        task = bar.add_task(f"training {settings.method}", total=total, loss="-")

        def step(n: int, loss: float) -> None:
            bar.update(task, advance=n, loss=f"{loss:.3f}")

        return train_recovery(loaded, settings, train_settings, step, recipe=recipe)


def _lora_latency(loaded, batch, train_settings) -> float:
    """LoRA's latency for comparison: an untrained default LoRA (its values do not change
    the time a forward takes)."""
    from knowcomp.recovery.adapters import AdapterInfo, PeftAdapter
    from knowcomp.recovery.latency import forward_seconds
    from knowcomp.recovery.methods import lora_config
    from knowcomp.recovery.settings import LoraSettings

    settings = LoraSettings()
    config = lora_config(loaded, settings)
    adapter = PeftAdapter(settings, AdapterInfo("lora", "lora", 0), config, {})
    with adapter.attached(loaded.model):
        return forward_seconds(loaded.model, batch)


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


def _rows(stages: dict[str, list]) -> list[tuple[str, list[float | None]]]:
    """(label, score per stage): each probe's headline score, then the category averages."""
    from knowcomp.probes.categories import category_averages, headline_metric, headline_score

    names = list(stages)
    first = stages[names[0]]
    rows = [
        (f"{r.probe} ({headline_metric(r)})", [headline_score(stages[n][i]) for n in names])
        for i, r in enumerate(first)
    ]
    layouts = [category_averages(stages[n]) for n in names]
    for c, average in enumerate(layouts[0].categories):
        if average.present:
            rows.append((f"{average.name} average", [lay.categories[c].score for lay in layouts]))
    rows.append(("overall average", [lay.overall for lay in layouts]))
    return rows


def _print_comparison(stages: dict[str, list]) -> None:
    from knowcomp.analysis.compare import headline_drop

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
    shares = _share_intervals(stages)
    for i, (label, scores) in enumerate(_rows(stages)):
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


def _share_intervals(stages: dict[str, list]) -> dict[str, str]:
    """Row label -> `[low, high]` of the recovered share, per probe and for the overall
    average (probes as strata), where every stage has per-item records."""
    from knowcomp.analysis.intervals import Stratum, Undefined, recovered_share_estimate
    from knowcomp.analysis.items import aligned, item_values
    from knowcomp.probes.categories import headline_metric

    if list(stages) != ["uncompressed", "compressed", "recovered"]:
        return {}
    out, strata = {}, []
    for i, first in enumerate(stages["uncompressed"]):
        name = headline_metric(first)
        runs = [item_values(stages[n][i].records, name) for n in stages] if name else []
        complete = bool(runs) and all(r is not None for r in runs)
        pair = aligned(runs) if complete else None  # type: ignore[arg-type]
        if pair is None:
            continue
        stratum = Stratum(pair.rows, None)
        strata.append(stratum)
        found = recovered_share_estimate([stratum])
        if not isinstance(found, Undefined):
            out[f"{first.probe} ({name})"] = f"[{100 * found.low:+.0f}%, {100 * found.high:+.0f}%]"
    if strata and len(strata) == len(stages["uncompressed"]):
        found = recovered_share_estimate(strata)
        if not isinstance(found, Undefined):
            out["overall average"] = f"[{100 * found.low:+.0f}%, {100 * found.high:+.0f}%]"
    return out


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
    return {
        "scores": {label: dict(zip(stages, scores, strict=True)) for label, scores in _rows(stages)}
        if stages
        else {},
        "latency_ms": {name: round(1000 * s, 2) for name, s in timing.items()},
    }


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
