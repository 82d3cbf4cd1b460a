"""`knowcomp cache list / clear`: the stored uncompressed-model results (`knowcomp.cache`)."""

from __future__ import annotations

import time

import click
from rich.table import Table

from knowcomp.cli.format import console, human_bytes
from knowcomp.errors import KnowcompError


def _cache():
    from knowcomp.cache import default_cache
    from knowcomp.cache.baselines import ENV

    cache = default_cache()
    if cache is None:
        raise KnowcompError(f"the baseline cache is off ({ENV}=off); unset {ENV} to use it")
    return cache


@click.group("cache")
def cache() -> None:
    """The baseline cache: each uncompressed model's probe results, computed once and reused
    by `run`, `eval` and `recover` on the same weights, data and options.

    Folder: KNOWCOMP_BASELINE_CACHE, else baselines/ under KNOWCOMP_CACHE (default
    ~/.cache/knowcomp); KNOWCOMP_BASELINE_CACHE=off turns it off.
    """


@cache.command("list")
def list_() -> None:
    """List the stored baselines: model, probe, size, age and state."""
    store = _cache()
    try:
        entries = store.entries()
    except OSError as err:
        raise KnowcompError(f"cannot read the baseline cache folder {store.root} "
                            f"({err.strerror}); check its permissions") from None  # fmt: skip
    if not entries:
        console.print(f"no baselines stored in {store.root}")
        return
    table = Table(title=f"Baseline cache: {store.root}", title_justify="left")
    for column, justify in (("Model", "left"), ("Weights", "left"), ("Probe", "left"),
                            ("Size", "right"), ("Age", "right"), ("State", "left")):  # fmt: skip
        table.add_column(column, justify=justify)
    now = time.time()
    for e in entries:
        table.add_row(e.model, e.weights[:12], e.probe, human_bytes(e.size),
                      _age(now - e.created), e.state)  # fmt: skip
    console.print(table)
    total = sum(e.size for e in entries)
    console.print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
                  f"{human_bytes(total)}; stale: computed under other versions (never "
                  "reused; `knowcomp cache clear --stale` removes them)")  # fmt: skip


@cache.command("clear")
@click.option(
    "--model",
    "-m",
    help="Only this model's entries: its name as given, its folder, or the first 8+ "
    "characters of its weights hash (see `knowcomp cache list`).",
)
@click.option("--stale", is_flag=True, help="Only entries of other versions, or unreadable ones.")
def clear(model: str | None, stale: bool) -> None:
    """Delete stored baselines (all of them without options); they are recomputed when
    next needed."""
    store = _cache()
    try:
        removed = store.clear(model=model, stale=stale)
    except OSError as err:
        raise KnowcompError(f"cannot delete from {store.root} ({err.strerror}); check the "
                            "folder's permissions") from None  # fmt: skip
    if not removed and model is not None:
        raise KnowcompError(f"no baseline of model '{model}' in {store.root}; "
                            "`knowcomp cache list` shows the stored models")  # fmt: skip
    size = human_bytes(sum(e.size for e in removed))
    console.print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
                  f"({size}) from {store.root}")  # fmt: skip


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"
