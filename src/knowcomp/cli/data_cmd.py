"""`knowcomp data`: import the offline evaluation data mirror, list what the data directory has."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from knowcomp.cli.format import console
from knowcomp.data.importer import (
    MISSING,
    OK,
    DatasetStatus,
    ImportReport,
    ImportVerificationError,
    ProgressCallback,
    check_all,
    import_mirror,
)
from knowcomp.paths import data_dir

_STAGES = {"files": "verifying files", "datasets": "counting rows"}
_STYLE = {OK: "green", MISSING: "yellow"}


_DATA_DIR_HELP = (
    "The data directory to use instead of the default (the KNOWCOMP_DATA environment variable, "
    "else a knowcomp cache folder)."
)


@click.group()
def data() -> None:
    """Bring the evaluation data into the data directory and see what is there.

    Nothing is downloaded: datasets come from an offline mirror (such as ../shared/data, with
    its SHA256SUMS and PROVENANCE.md), imported once with `knowcomp data import PATH`.
    """


@data.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--link",
    is_flag=True,
    help="Symlink the mirror's files instead of copying them (saves disk space; the mirror "
    "must then stay where it is).",
)
@click.option("--data-dir", "dest", type=click.Path(path_type=Path), help=_DATA_DIR_HELP)
def import_cmd(path: Path, link: bool, dest: Path | None) -> None:
    """Import the evaluation data mirror at PATH into the data directory.

    Copies (or links) every file the mirror's SHA256SUMS lists, checking each checksum, then
    counts every dataset's rows against the catalog. Running it again skips the files that
    already match, and replaces damaged ones.
    """
    console = _console()
    try:
        with _progress() as callback:
            report = import_mirror(path, dest, link=link, progress=callback)
    except ImportVerificationError as err:
        _print_import(console, err.report)
        raise
    _print_import(console, report)


@data.command("list")
@click.option("--data-dir", "root", type=click.Path(path_type=Path), help=_DATA_DIR_HELP)
def list_cmd(root: Path | None) -> None:
    """List every known dataset: category, rows expected and found, status and path.

    Rows are counted by reading each dataset with its loader, so a damaged file shows up here.
    """
    console = _console()
    root = root if root is not None else data_dir()
    with _progress() as callback:
        statuses = check_all(root, progress=callback)
    table = Table(title=f"Datasets in {root}", title_justify="left")
    table.add_column("dataset", no_wrap=True)
    table.add_column("category", no_wrap=True)
    table.add_column("rows expected", justify="right")
    table.add_column("rows found", justify="right")
    table.add_column("status", no_wrap=True)
    table.add_column("path", overflow="fold")
    for status in statuses:
        table.add_row(
            status.name,
            status.category,
            f"{status.rows_expected:,}",
            _rows(status),
            _state(status),
            status.location,
        )
    console.print(table)
    missing = [status.name for status in statuses if status.state == MISSING]
    if missing:
        console.print(
            f"{len(missing)} dataset(s) missing; import them with `knowcomp data import PATH` "
            "(PATH: the evaluation data mirror, e.g. ../shared/data)."
        )


def _console() -> Console:
    """Stdout's console, shared with the other commands (wide when writing to a pipe)."""
    return console


def _print_import(console: Console, report: ImportReport) -> None:
    actions = ("copied", "linked", "replaced", "skipped", "verified")
    done = ", ".join(f"{report.count(a)} {a}" for a in actions if report.count(a))
    console.print(f"{len(report.files)} files from {report.source} into {report.dest}: {done}")
    table = Table(title="Datasets", title_justify="left")
    table.add_column("dataset", no_wrap=True)
    table.add_column("rows", justify="right")
    table.add_column("expected", justify="right")
    table.add_column("status", no_wrap=True)
    for status in report.datasets:
        table.add_row(status.name, _rows(status), f"{status.rows_expected:,}", _state(status))
    console.print(table)


def _rows(status: DatasetStatus) -> str:
    return "-" if status.rows_found is None else f"{status.rows_found:,}"


def _state(status: DatasetStatus) -> str:
    label = "present" if status.state == OK else status.state
    return f"[{_STYLE.get(status.state, 'red')}]{label}[/]"


@contextmanager
def _progress() -> Iterator[ProgressCallback]:
    """A transient rich progress display on stderr, fed by the importer's progress callback."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[dim]{task.fields[item]}"),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int, item: str) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(_STAGES.get(stage, stage), total=total, item="")
        progress.update(tasks[stage], completed=done, total=total, item=item)

    with progress:
        yield update
