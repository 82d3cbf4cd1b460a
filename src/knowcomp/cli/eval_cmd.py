"""`knowcomp eval`: run knowledge probes on a model (optionally compressed first)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
from rich.table import Table

from knowcomp.cli.format import console, err_console
from knowcomp.cli.options import (
    add_bos_option,
    batch_tokens_option,
    placement_options,
    precision_option,
)
from knowcomp.cli.progress import compression_progress, work_progress
from knowcomp.models.placement import choose_placement
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
@precision_option
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Write results (JSON).")
@click.option("--force", is_flag=True, help="Let --out replace a file knowcomp did not write.")
@placement_options
@batch_tokens_option
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
    precision: float | None,
    out: Path | None,
    force: bool,
    device: str,
    dtype: str,
    device_map: str | None,
    batch_tokens: int | None,
) -> None:
    """Measure what MODEL knows with knowledge probes, and print a results table.

    Probes: `knowcomp probes` lists them. With --recipe, the model is compressed first and the
    table shows the compressed model's scores; with --adapter, a recovery adapter is attached.
    With --precision (and --recipe or --adapter), each probe's items are scored in a seeded
    order, chunk by chunk, paired with the uncompressed model's scores of the same items, until
    the drop's anytime-valid 95% interval is at most that many points wide on each side.
    """
    from knowcomp.compress import parse_recipe
    from knowcomp.models.sources import resolve
    from knowcomp.outputs import check_output_file
    from knowcomp.pipeline import Pipeline
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
    options = RunOptions(
        limit=limit, seed=seed, data_dir=data_dir, skip_malformed=skip_malformed,
        lama_mode=lama_mode, lama_protocol=lama_protocol, max_new_tokens=max_new_tokens,
        add_bos=add_bos or "auto", max_tokens=batch_tokens,
    )  # fmt: skip
    for probe in chosen:
        probe.count(options)  # reads the data: a missing dataset fails here, before loading
    if precision is not None:
        _check_adaptive(chosen, options, compared=parsed is not None or adapter is not None)
    with err_console.status(f"loading {model}"):
        pipeline = Pipeline(model, placement=placement, data_dir=data_dir)
    if parsed is not None:
        pipeline.plan(parsed, seed)
        with compression_progress() as progress:
            report = pipeline.compress(parsed, seed, progress).report
        console.print(f"compressed with {report.recipe}: {report.headline()}", highlight=False)
    attached = None
    if adapter is not None:
        attached = pipeline.load_adapter(adapter)
        console.print(f"with {attached.method} adapter from {adapter} ({attached.info.settings})")

    score = None
    if precision is not None:
        from knowcomp.pipeline.adaptive import AgainstBaseline

        score = AgainstBaseline(
            precision, lambda probe, o: pipeline.uncompressed_run(probe, o, parsed, seed)
        )
    saved: list = []

    def save(results: list) -> None:  # after every probe, so an interrupt keeps what is done
        if out is not None:
            record = {"model": model, "recipe": recipe, "options": _options_record(options),
                      **placement.record(),
                      "input_rule": pipeline.input_rule(options.add_bos)}  # fmt: skip
            if score is not None:  # the baseline's items the drops are paired with
                record.update(precision=precision, baselines=list(score.baselines.values()))
            _save(out, record, results, complete=len(results) == len(chosen))
            saved[:] = results

    try:
        with work_progress() as progress:
            evaluation = pipeline.evaluate(chosen, options, adapter=attached, progress=progress,
                                           after_each=save, score=score)  # fmt: skip
    except KeyboardInterrupt:
        kept = f"{len(saved)} of {len(chosen)} probe(s) kept in {out}" if saved else None
        raise KeyboardInterrupt(kept or "no results were written") from None
    results = [_as_result(r) for r in evaluation.results]
    _print_table(model, results, adaptive=score is not None)
    if score is not None:
        _print_adaptive(evaluation.results, score.baselines, precision)
    where = ", ".join(f"{k} {v}" for k, v in placement.record().items())
    console.print(f"{evaluation.seconds:.1f} s of probing on {where}", highlight=False)
    if out is not None:
        console.print(f"results written to {out}")


def _options_record(options) -> dict:
    """The probe options a result depends on, as `eval --out` records them."""
    keep = ("limit", "seed", "lama_mode", "lama_protocol", "max_new_tokens", "add_bos")
    return {key: getattr(options, key) for key in keep}


def _check_adaptive(probes: list, options, *, compared: bool) -> None:
    """--precision needs something to compare with the baseline, and probes that score parts
    of their items: one line otherwise, before the model loads."""
    from knowcomp.errors import KnowcompError
    from knowcomp.pipeline.adaptive import check_parts

    if not compared:
        raise KnowcompError(
            "--precision stops on the drop against the uncompressed model, so it needs "
            "--recipe (or --adapter); add one, or drop --precision"
        )
    for probe in probes:
        check_parts(probe, options)


def _as_result(result):
    """A `ProbeResult` (an adaptive result comes back in its stored form, a dict)."""
    from knowcomp.probes.base import ProbeResult

    if not isinstance(result, dict):
        return result
    keep = ("probe", "category", "metrics", "counts", "records", "options", "seconds", "notes")
    return ProbeResult(**{key: result[key] for key in keep if key in result})


def _print_adaptive(results: list[dict], baselines: dict[str, dict], precision: float) -> None:
    """Each probe's items used, why it stopped, and the drop's anytime-valid interval."""
    from knowcomp.pipeline.adaptive import paired_scores

    table = Table(title=f"Drop against the uncompressed model (--precision {precision:g})",
                  title_justify="left")  # fmt: skip
    for col in ("Probe", "Items used", "Baseline", "Compared", "Drop [95% CS]", "Stopped"):
        table.add_column(col, justify="left" if col in ("Probe", "Stopped") else "right")
    for result in results:
        seq, drop = result["sequential"], result["sequential"]["drop"]
        pair = paired_scores(result, baselines[result["probe"]])
        base, ours = ("", "") if pair is None else (f"{100 * pair[0]:.1f}", f"{100 * pair[1]:.1f}")
        used = f"{drop['items'] if drop else 0} of {seq['pool']}"
        interval = "" if drop is None else (
            f"{drop['value']:+.1f} [{drop['low']:+.1f}, {drop['high']:+.1f}]")  # fmt: skip
        table.add_row(result["probe"], used, base, ours, interval, seq["stop"])
    console.print(table)
    console.print("Drop: uncompressed minus compared, in points, on the same items (scored in a "
                  "seeded order); [95% CS]: the betting confidence sequence, valid where the "
                  "scoring stopped on it. Scores in the table above are those of the items "
                  "used.", highlight=False)  # fmt: skip


def _save(out: Path, record: dict, results: list, *, complete: bool) -> None:
    dicts = [r if isinstance(r, dict) else r.to_dict() for r in results]
    payload = {**record, "complete": complete, "results": dicts}
    write_atomically(out, json.dumps(payload, indent=1))


EVAL_JSON_KEYS = {"model", "recipe", "complete", "results"}


def _is_eval_json(path: Path) -> bool:
    """Whether `path` is a results file `knowcomp eval --out` wrote (and may be replaced)."""
    try:
        payload = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and set(payload) >= EVAL_JSON_KEYS


def _print_table(model: str, results, *, adaptive: bool = False) -> None:
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
        headline = _headline(r, interval=not adaptive)
        table.add_row(r.probe, f"{r.counts.get('scored', 0)}/{items}", *cells, headline,
                      f"{r.seconds:.1f}")  # fmt: skip
    console.print(table)
    _print_categories(results)
    for r in results:
        for note in r.notes:
            console.print(f"[yellow]note:[/] {r.probe}: {note}")


def _headline(result, *, interval: bool = True) -> str:
    """`acc 0.600 [0.550, 0.648]`: the headline with its 95% interval over the items (Wilson;
    relation-clustered for LAMA), from the result's per-item records. Without `interval` (an
    adaptive result: a fixed-sample interval is not valid where scoring stopped on the data),
    the value alone."""
    from knowcomp.analysis.intervals import score_interval
    from knowcomp.analysis.items import item_values
    from knowcomp.probes.categories import headline_metric

    name = headline_metric(result)
    if name is None:
        return ""
    if not interval:
        return f"{name} {result.metrics[name]:.3f}"
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
