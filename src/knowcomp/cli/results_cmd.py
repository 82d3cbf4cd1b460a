"""`knowcomp results`: list, filter and export what a study stored."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from knowcomp.cli.format import console
from knowcomp.errors import KnowcompError

FLAT_COLUMNS = (
    "model", "sweep", "recipe", "recover", "level", "seed", "limit_items", "probe", "category",
    "sparsity", "params_compressed", "params_model", "bytes_before", "bytes_after",
    "eval_seconds", "trial_key",
)  # fmt: skip
# the headline score and, against the baseline of the same model and seed, the paired drop
# (fractions for the score, points for the drop; empty without per-item records)
UNCERTAINTY_COLUMNS = ("headline_metric", "headline", "headline_low", "headline_high",
                       "drop_points", "drop_low", "drop_high", "drop_p", "drop_test")  # fmt: skip
# adaptive evaluation (`--precision`; empty otherwise): the precision asked, the items the drop
# rests on, the pool (items an exhaustive run scores), the share of the item draws scored and
# why it stopped; drop_low/drop_high are then the anytime-valid confidence sequence
ADAPTIVE_COLUMNS = ("adaptive_precision", "adaptive_items", "adaptive_pool", "adaptive_share",
                    "adaptive_stop")  # fmt: skip


@click.command("results")
@click.argument("db", type=click.Path(path_type=Path))
@click.option("--model", "-m", help="Only this model.")
@click.option("--probe", "-p", help="Only this probe.")
@click.option("--sweep", "-s", help="Only this sweep (e.g. prune/overall, baseline).")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "csv", "jsonl"]),
              default="table", show_default=True, help="Print a table, or export.")  # fmt: skip
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Write the export to a file.")
def results(
    db: Path, model: str | None, probe: str | None, sweep: str | None, fmt: str, out: Path | None
) -> None:
    """List the results stored in DB (a study's SQLite file), filtered, or export them.

    CSV has one row per trial x probe with every metric as a column; JSON lines keep each
    row whole (compression report and package versions included). Each row also has its
    headline score with its 95% interval and, for a compressed or recovered trial, its drop
    against the baseline (same model and seed) with the paired interval and p-value, computed
    from the stored per-item records. A result of adaptive evaluation (`--precision`) shows
    the items its drop rests on, why it stopped, and its anytime-valid interval instead.
    """
    from knowcomp.outputs import check_output_file, write_atomically
    from knowcomp.store import ResultsStore

    if out is not None:
        if fmt == "table":
            raise KnowcompError("--out writes an export; add --format csv or --format jsonl")
        check_output_file(out)
    with ResultsStore(db, readonly=True) as store:
        rows = store.rows(model=model, probe=probe, sweep=sweep)
        if rows:
            _add_uncertainty(store, rows)
    if not rows:
        raise KnowcompError(
            f"no results in {db} match the filters; drop or change --model, --probe or --sweep"
        )
    if fmt == "table":
        _print_table(rows)
        return
    handle = io.StringIO() if out else sys.stdout
    if fmt == "jsonl":
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    else:
        _write_csv(rows, handle)
    if out:
        write_atomically(out, handle.getvalue())
        console.print(f"{len(rows)} rows written to {out}")


def _add_uncertainty(store, rows: list[dict[str, Any]]) -> None:
    """Each row's `uncertainty`: headline, score interval, paired drop (see the columns)."""
    from knowcomp.report.frame import load_frame

    frame = load_frame(store)
    found: dict[tuple[str, str], Any] = {}
    for b in frame.baselines:
        found[(b.trial_key, b.probe)] = (b.metric, b.value, b.score_ci, None, None)
    for p in (*frame.points, *frame.recovered):
        found[(p.trial_key, p.probe)] = (p.metric, p.value, p.score_ci, p.drop, p.drop_ci)
    for row in rows:
        metric, value, score, drop, ci = found.get((row["trial_key"], row["probe"]),
                                                   (None,) * 5)  # fmt: skip
        row["uncertainty"] = {
            "headline_metric": metric, "headline": value,
            "headline_low": score.low if score else None,
            "headline_high": score.high if score else None,
            "drop_points": ci.value if ci else drop,
            "drop_low": ci.low if ci else None, "drop_high": ci.high if ci else None,
            "drop_p": ci.p_value if ci else None, "drop_test": ci.method if ci else None,
        }  # fmt: skip
        row["uncertainty"].update(_adaptive(row.get("sequential")))


def _adaptive(sequential: dict[str, Any] | None) -> dict[str, Any]:
    """The `ADAPTIVE_COLUMNS` of a result (all None for one that scored every item)."""
    if sequential is None:
        return dict.fromkeys(ADAPTIVE_COLUMNS)
    drop = sequential.get("drop") or {}
    return {"adaptive_precision": sequential.get("precision"),
            "adaptive_items": drop.get("items"), "adaptive_pool": sequential.get("pool"),
            "adaptive_share": sequential.get("share"),
            "adaptive_stop": sequential.get("stop")}  # fmt: skip


def _metric_names(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r["metrics"]))


def _write_csv(rows: list[dict[str, Any]], handle) -> None:
    metrics = _metric_names(rows)
    writer = csv.writer(handle)
    writer.writerow([*FLAT_COLUMNS, *UNCERTAINTY_COLUMNS, *ADAPTIVE_COLUMNS, *metrics])
    for r in rows:
        flat = {**r, "recover": _recover(r)}
        writer.writerow(
            [flat.get(c) for c in FLAT_COLUMNS]
            + [r["uncertainty"].get(c) for c in (*UNCERTAINTY_COLUMNS, *ADAPTIVE_COLUMNS)]
            + [r["metrics"].get(m) for m in metrics]
        )


def _print_table(rows: list[dict[str, Any]]) -> None:
    shown = [m for m in ("p@1_micro", "p@1_macro", "acc", "acc_norm", "majority",
                         "exact_match", "perplexity") if m in _metric_names(rows)]  # fmt: skip
    table = Table(title=f"{len(rows)} results", title_justify="left")
    over = "Sparsity (compressed layers)"  # zeros over the layers the recipe touched
    extra = ("Headline 95%", "Drop [95%]", "p")
    adaptive = any(r.get("sequential") for r in rows)
    extra += ("Adaptive",) if adaptive else ()
    for column in ("Model", "Sweep", "Level", "Seed", "Limit", "Probe", over, *shown, *extra):
        whole = column in ("Sweep", "Probe", "Adaptive")  # never wrapped (a path may fold)
        left = whole or column == "Model"
        table.add_column(column, justify="left" if left else "right", no_wrap=whole,
                         overflow="fold" if column == "Model" else "ellipsis")  # fmt: skip
    for r in rows:
        level = "" if r["level"] is None else f"{r['level']:g}"
        cells = [_fmt(r["metrics"].get(m)) for m in shown]
        sparsity = "" if r["sparsity"] is None else f"{r['sparsity']:.1%}"
        sweep = r["sweep"] + (f" + {_recover(r)}" if r.get("recovery") else "")
        limit = "full" if r["limit_items"] is None else str(r["limit_items"])
        more = [_adaptive_cell(r["uncertainty"])] if adaptive else []
        table.add_row(r["model"], sweep, level, str(r["seed"]), limit, r["probe"], sparsity,
                      *cells, *_uncertainty_cells(r["uncertainty"]), *more)  # fmt: skip
    console.print(table)
    console.print(
        "Headline 95%: the interval over items of the probe's one number (P@1 micro for LAMA, "
        "acc for multiple choice, exact match for QA); drop: baseline minus this trial on the "
        "same items, in points, with its paired interval and test (McNemar's exact test; "
        "relation-clustered for LAMA). Empty where the file has no per-item records.",
        style="dim",
        highlight=False,
    )
    if adaptive:
        console.print(
            "Adaptive (--precision): the items the drop rests on, of the probe's pool, and why "
            "scoring stopped; its drop interval is the anytime-valid confidence sequence (no "
            "p-value) and its score has no interval. A baseline shows the share of its items "
            "scored (as far as its trials needed).",
            style="dim",
            highlight=False,
        )


def _adaptive_cell(u: dict[str, Any]) -> str:
    """`412/2000 items, precision reached` for an adaptive trial; a baseline's share scored."""
    if u["adaptive_stop"] is None:
        return ""
    if u["adaptive_items"] is None:  # a baseline: no drop of its own
        return f"{u['adaptive_share']:.0%} of its items scored"
    return f"{u['adaptive_items']}/{u['adaptive_pool']} items, {u['adaptive_stop']}"


def _uncertainty_cells(u: dict[str, Any]) -> list[str]:
    """The headline's interval, the drop in points with its interval, the drop's p-value."""
    score = ""
    if u["headline_low"] is not None:
        score = f"[{u['headline_low']:.3f}, {u['headline_high']:.3f}]"
    drop = "" if u["drop_points"] is None else f"{u['drop_points']:.1f}"
    if u["drop_low"] is not None:
        drop += f" [{u['drop_low']:.1f}, {u['drop_high']:.1f}]"
    p = "" if u["drop_p"] is None else f"{u['drop_p']:.2g}"
    return [score, drop, p]


def _recover(row: dict[str, Any]) -> str | None:
    """The trial's recovery method in short (`lora`, `idp:prompts=4`), None without one."""
    recovery = row.get("recovery")
    return str(recovery.get("label") or recovery.get("method")) if recovery else None


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
