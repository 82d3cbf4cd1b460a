"""`knowcomp report`: the study's tables, plots, forgetting and findings from a results file."""

from __future__ import annotations

from pathlib import Path

import click

from knowcomp.cli.format import console, err_console

_VERDICT_STYLE = {"holds": "green", "does not hold": "red", "inconclusive": "yellow",
                  "not enough data": "dim", "saturated": "dim"}  # fmt: skip


@click.command("report")
@click.argument("db", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write the report into (created if needed; files in it are replaced). "
    "Default: beside DB, named after it with '-report' (runs/study.sqlite -> "
    "runs/study-report/).",
)
@click.option(
    "--choice-metric",
    type=click.Choice(["acc", "acc_norm"]),
    default="acc",
    show_default=True,
    help="Headline of the multiple-choice probes: accuracy (both studies' number) or "
    "lm-evaluation-harness's length-normalised acc_norm.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the path of report.html.")
def report(db: Path, out: Path | None, choice_metric: str, quiet: bool) -> None:
    """Write the report of results file DB (from `knowcomp run`) into a folder.

    \b
    Writes:
      report.html     everything below in one self-contained page (no external files)
      tables/         Tables 1, 3-6 of The Cost of Compression, and every drop with its
                      paired 95% interval (.md, .csv, .tex)
      plots/          drops against sparsity per group and per probe, final layer
                      structured vs unstructured, drop against the share of parameters
                      compressed, layer-wise similarity to the uncompressed model
                      (studies with `similarity:`) (.png, .svg)
      drops.csv       every compressed trial x probe with its baseline and drop
      similarity.csv  per compressed trial and layer, attention and hidden cosine
      forgetting/     facts and items the baseline got right and a compressed model missed
      findings.md     whether each claim of both studies holds on this data, per model
                      and probe kind, each verdict with its paired tests

    Scores are each probe's headline metric (LAMA: P@1 micro; multiple choice and LAMBADA:
    accuracy, or acc_norm with --choice-metric acc_norm; QA: exact match) in percent; drops
    are baseline minus compressed, in points.
    """
    from knowcomp.report import generate_report

    out = out if out is not None else db.with_name(f"{db.stem}-report")

    def progress(message: str) -> None:
        if not quiet:
            err_console.print(message, style="dim", highlight=False, markup=False)

    result = generate_report(db, out, progress=progress, choice_metric=choice_metric)
    if quiet:
        click.echo(str(result.html))
        return
    console.print("\n[bold]Findings of both studies, on this data[/bold]")
    for finding in result.findings:
        style = _VERDICT_STYLE.get(finding.verdict, "")
        console.print(
            f"{finding.number}. {finding.claim}: [{style}]{finding.verdict}[/{style}]",
            highlight=False,
        )
        console.print(f"   {finding.summary}", highlight=False, markup=False)
        for line in finding.tests:
            console.print(f"   test: {line}", highlight=False, markup=False)
        for line in finding.evidence:
            console.print(f"   - {line}", highlight=False, markup=False)
    for note in result.notes:
        console.print(f"note: {note}", style="dim", highlight=False, markup=False)
    console.print(
        f"\n{len(result.tables)} table(s), {len(result.plots)} plot(s) in {result.folder}",
        highlight=False,
    )
    console.print(f"open: {result.html}", highlight=False, markup=False)
