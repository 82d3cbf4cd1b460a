"""`knowcomp eval`: run knowledge probes on a model (optionally compressed first)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from knowcomp.cli.format import console, err_console
from knowcomp.cli.options import (
    ChosenPlacement,
    add_bos_option,
    choose_placement,
    placement_options,
)
from knowcomp.cli.progress import compression_progress
from knowcomp.outputs import write_atomically

COLUMNS = (
    ("p@1_macro", "P@1 macro"),
    ("p@1_micro", "P@1 micro"),
    ("p@10_micro", "P@10 micro"),
    ("mrr_micro", "MRR micro"),
    ("exact_match_macro", "EM macro"),
    ("exact_match_micro", "EM micro"),
    ("exact_match", "EM"),
    ("capped", "capped"),
    ("acc", "acc"),
    ("acc_norm", "acc_norm"),
    ("majority", "majority"),
    ("perplexity", "ppl"),
)


@click.command("eval")
@click.argument("model")
@click.option("--probes", "-p", required=True, help="Comma-separated probes, e.g. lama-trex,piqa.")
@click.option("--limit", type=click.IntRange(min=1), help="Items per relation (LAMA) or per task.")
@click.option("--seed", default=0, show_default=True, help="Which --limit subset (fixed per seed).")
@click.option("--recipe", "-r", help="Compress with this recipe first (see `knowcomp methods`).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory to read.")
@click.option(
    "--skip-malformed", is_flag=True, help="Skip malformed data lines instead of failing."
)
@click.option(
    "--lama-mode",
    type=click.Choice(["next-token", "candidates", "generate"]),
    default="next-token",
    show_default=True,
    help="LAMA on decoders: rank the object's token in the vocabulary, rank every object "
    "of the relation by log-likelihood (multi-token objects too; slower), or generate an "
    "answer greedily and count exact matches of the object.",
)
@add_bos_option
@click.option(
    "--lama-protocol",
    show_default=True,
    type=click.Choice(["templates", "cost-of-compression"]),
    default="templates",
    help="LAMA protocol: templates (LAMA's: relation templates, the object's token rank, "
    "several-token objects left out; the default) or cost-of-compression (the first study's: "
    "first masked evidence sentence, deduplicated, string match of the top token, "
    "several-token objects counted wrong, micro top-1). Results of the latter are named "
    "PROBE@cost-of-compression.",
)
@click.option(
    "--max-new-tokens",
    type=int,
    help="Generation cap for open-answer probes (triviaqa, webqs, --lama-mode generate); "
    "default 32.",
)
@click.option(
    "--adapter",
    type=click.Path(path_type=Path, file_okay=False),
    help="Attach a recovery adapter saved by `knowcomp recover --out` (its recipe is applied "
    "first unless --recipe is given).",
)
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Write results (JSON).")
@click.option("--force", is_flag=True, help="Let --out replace a file knowcomp did not write.")
@placement_options
def eval_(
    model: str,
    probes: str,
    limit: int | None,
    seed: int,
    recipe: str | None,
    data_dir: Path | None,
    skip_malformed: bool,
    lama_mode: str,
    lama_protocol: str,
    add_bos: str | None,
    max_new_tokens: int | None,
    adapter: Path | None,
    out: Path | None,
    force: bool,
    device: str,
    dtype: str,
    device_map: str | None,
) -> None:
    """Measure what MODEL knows with knowledge probes, and print a results table.

    Probes: `knowcomp probes` lists them. With --recipe, the model is compressed first and the
    table shows the compressed model's scores; with --adapter, a recovery adapter is attached.
    """
    from knowcomp.compress import CompressionSession, parse_recipe
    from knowcomp.models import load_model
    from knowcomp.models.sources import resolve
    from knowcomp.outputs import check_output_file
    from knowcomp.probes.base import RunOptions
    from knowcomp.probes.generate import check_cap
    from knowcomp.probes.lama.protocols import check_protocol
    from knowcomp.probes.registry import parse_probe_list

    if max_new_tokens is not None:
        check_cap(max_new_tokens)
    check_protocol(lama_protocol, lama_mode)
    chosen = parse_probe_list(probes)
    if adapter is not None:
        from knowcomp.recovery.adapters import adapter_record

        recipe = recipe or adapter_record(adapter).recipe or None
    parsed = parse_recipe(recipe) if recipe else None
    placement = choose_placement(device, dtype, device_map, parsed)
    resolve(model)
    if out is not None:
        check_output_file(out, force=force, ours=_is_eval_json)
    base = RunOptions(
        limit=limit, seed=seed, data_dir=data_dir, skip_malformed=skip_malformed,
        lama_mode=lama_mode, lama_protocol=lama_protocol, max_new_tokens=max_new_tokens,
        add_bos=add_bos or "auto",
    )  # fmt: skip
    totals = [p.count(base) for p in chosen]  # reads the data: a missing dataset fails here
    with err_console.status(f"loading {model}"):
        loaded = load_model(model, **placement.load_kwargs())
    if parsed is not None:
        with compression_progress() as progress:
            report = CompressionSession(loaded).apply(parsed, seed=seed, progress=progress)
        console.print(f"compressed with {report.recipe}: {report.headline()}", highlight=False)

    saved: list = []

    def save(results: list) -> None:  # after every probe, so an interrupt keeps what is done
        if out is not None:
            _save(
                out,
                model,
                recipe,
                results,
                complete=len(results) == len(chosen),
                placement=placement,
            )
            saved[:] = results

    try:
        if adapter is None:
            results = run_probes(loaded, chosen, totals, base, after_each=save,
                                 baseline=parsed is None)  # fmt: skip
        else:
            from knowcomp.recovery import load_adapter

            attached = load_adapter(adapter, loaded.model)
            console.print(
                f"with {attached.method} adapter from {adapter} ({attached.info.settings})"
            )
            with attached.attached(loaded.model):
                results = run_probes(loaded, chosen, totals, base, after_each=save)
    except KeyboardInterrupt:
        kept = f"{len(saved)} of {len(chosen)} probe(s) kept in {out}" if saved else None
        raise KeyboardInterrupt(kept or "no results were written") from None
    _print_table(model, results)
    if out is not None:
        console.print(f"results written to {out}")


def run_probes(loaded, chosen: list, totals: list[int], base, *, label: str = "",
               after_each=None, baseline: bool = False) -> list:  # fmt: skip
    """Run each probe on `loaded` with an item progress bar; `after_each(results so far)`.
    `baseline`: the model is uncompressed with no adapter, so results come from and go to
    the baseline cache (`knowcomp.cache`)."""
    from knowcomp.cache import cached_probe_run
    from knowcomp.probes.base import RunOptions

    results: list = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err_console, transient=True,
    ) as bar:  # fmt: skip
        for probe, total in zip(chosen, totals, strict=True):
            task = bar.add_task(f"{label}{probe.name}", total=total)
            advance = lambda n, t=task: bar.advance(t, n)  # noqa: E731
            options = RunOptions(**{**base.__dict__, "progress": advance})
            results.append(cached_probe_run(loaded, probe, options, baseline=baseline))
            if after_each is not None:
                after_each(results)
    return results


def _save(
    out: Path, model: str, recipe: str | None, results: list, *, complete: bool,
    placement: ChosenPlacement,
) -> None:  # fmt: skip
    payload = {"model": model, "recipe": recipe, "complete": complete,
               "device": placement.device, "dtype": placement.dtype,
               "device_map": placement.device_map,
               "results": [r.to_dict() for r in results]}  # fmt: skip
    write_atomically(out, json.dumps(payload, indent=1))


EVAL_JSON_KEYS = {"model", "recipe", "complete", "results"}


def _is_eval_json(path: Path) -> bool:
    """Whether `path` is a results file `knowcomp eval --out` wrote (and may be replaced)."""
    try:
        payload = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and set(payload) >= EVAL_JSON_KEYS


def _print_table(model: str, results) -> None:
    used = [(key, label) for key, label in COLUMNS if any(key in r.metrics for r in results)]
    table = Table(title=f"{model}", title_justify="left")
    table.add_column("Probe")
    table.add_column("Scored", justify="right")
    for _, label in used:
        table.add_column(label, justify="right")
    table.add_column("Headline [95%]", justify="right")
    table.add_column("Seconds", justify="right")
    for r in results:
        items = r.counts.get("facts", r.counts.get("items", 0))
        cells = [_fmt(r.metrics.get(key)) for key, _ in used]
        table.add_row(r.probe, f"{r.counts.get('scored', 0)}/{items}", *cells, _headline(r),
                      f"{r.seconds:.1f}")  # fmt: skip
    console.print(table)
    _print_categories(results)
    for r in results:
        for note in r.notes:
            console.print(f"[yellow]note:[/] {r.probe}: {note}")


def _headline(result) -> str:
    """`acc 0.600 [0.550, 0.648]`: the headline with its 95% interval over the items (Wilson;
    relation-clustered for LAMA), from the result's per-item records."""
    from knowcomp.analysis.intervals import score_interval
    from knowcomp.analysis.items import item_values
    from knowcomp.probes.categories import headline_metric

    name = headline_metric(result)
    if name is None:
        return ""
    values = item_values(result.records, name, stored=float(result.metrics[name]))
    if values is None:
        return f"{name} {result.metrics[name]:.3f}"
    e = score_interval(values.values, values.clusters)
    return f"{name} {e.describe(3)}"


def _print_categories(results) -> None:
    """Per-category averages of the probes' headline scores (see `probes.categories`)."""
    from knowcomp.probes.categories import category_averages

    layout = category_averages(results)
    table = Table(title="By category (headline metric per probe)", title_justify="left")
    for col, justify in (("Category", "left"), ("Probes", "left"), ("Average", "right")):
        table.add_column(col, justify=justify)
    for average in layout.categories:
        probes = [f"{p} ({layout.metrics[p]})" for p in average.present]
        probes += [f"{p} (no score)" for p in average.missing]
        table.add_row(average.name, ", ".join(probes), _fmt(average.score))
    table.add_row("Overall", "mean of the probes above", _fmt(layout.overall))
    console.print(table)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3f}"


@click.command("probes")
def probes_() -> None:
    """List the knowledge probes."""
    from knowcomp.data import check_dataset
    from knowcomp.probes.registry import PROBES, load_builtin_probes

    load_builtin_probes()
    table = Table(title="Knowledge probes", title_justify="left")
    for col in ("Probe", "Category", "Data", "What it measures"):
        table.add_column(col)
    for name, cls in sorted(PROBES.items()):
        present = check_dataset(cls.dataset).present
        table.add_row(
            name, cls.category, "present" if present else "[yellow]missing[/]", cls.summary
        )
    console.print(table)
