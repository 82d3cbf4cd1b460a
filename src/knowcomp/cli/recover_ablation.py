"""`knowcomp recover -m idp --ablation`: IDP beside each of its prompts alone and their naive
concatenation, on the same probes (Table 3 of *Do Compressed LLMs Forget Knowledge?*)."""

from __future__ import annotations

from rich.table import Table

from knowcomp.cli.format import console
from knowcomp.errors import KnowcompError


def check_ablation(method: str, probes: str | None) -> None:
    """Before any work: the ablation needs IDP and probes to score."""
    from knowcomp.recovery.settings import parse_method

    if parse_method(method).method != "idp":
        raise KnowcompError(
            "--ablation compares IDP with its prompts; give -m idp (e.g. -m idp:tokens=26+100)"
        )
    if not probes:
        raise KnowcompError("--ablation scores every variant on the probes; give --probes")


def print_ablation(scores: dict[str, list]) -> dict:
    """Print the ablation table; returns it as {variant: {column: score}} for the record."""
    from knowcomp.recovery.ablation import ablation_rows

    columns, rows = ablation_rows(scores)
    table = Table(title="IDP ablation (the paper's Table 3): headline metric per probe",
                  title_justify="left")  # fmt: skip
    table.add_column("Variant")
    for column in columns:
        table.add_column(column, justify="right")
    for name, cells in rows:
        table.add_row(name, *["" if c is None else f"{c:.3f}" for c in cells])
    console.print(table)
    return {name: dict(zip(columns, cells, strict=True)) for name, cells in rows}
