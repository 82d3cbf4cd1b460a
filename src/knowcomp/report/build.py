"""Open a results file, and write every part of the report into one folder."""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from knowcomp.errors import KnowcompError
from knowcomp.report.findings import Finding, check_findings, findings_markdown
from knowcomp.report.forgetting import Forgetting, find_forgetting, write_forgetting
from knowcomp.report.frame import Frame, load_frame
from knowcomp.report.html import ReportContent, render_html
from knowcomp.report.paper_figures import draw_paper_figures
from knowcomp.report.plots import Plot, draw_plots
from knowcomp.report.similarity import draw_similarity, write_similarity
from knowcomp.report.table import Table, write_tables
from knowcomp.report.tables import build_tables
from knowcomp.store import (
    ResultsStore,
    StoreError,
    connect_readonly,
    identify_results_file,
)

DROP_COLUMNS = ("model", "sweep", "recipe", "kind", "group", "method", "level", "seed", "probe",
                "probe_kind", "metric", "baseline", "value", "drop_points", "drop_low",
                "drop_high", "p_value", "items", "test", "majority", "sparsity",
                "fraction_compressed")  # fmt: skip


class ReportError(KnowcompError):
    """A results file that is missing, not a knowcomp results file, or has no results."""


@dataclass
class ReportResult:
    html: Path
    folder: Path
    tables: list[Table]
    plots: list[Plot]
    findings: list[Finding]
    forgetting: Forgetting
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_results_file(db: Path, *, shown: Path | None = None) -> None:
    """Fail with one line, before anything is written, unless `db` is a knowcomp results file
    of this version with at least one result (`shown`: the path to name in messages)."""
    real, db = db, shown or db
    if not real.exists():
        raise ReportError(f"results file '{db}' does not exist; run a study first "
                          "(knowcomp run --preset quickstart) or check the path")  # fmt: skip
    if real.is_dir():
        raise ReportError(f"'{db}' is a folder; give the study's results file (.sqlite)")
    try:
        identify_results_file(real, must_exist=True)
    except StoreError as err:
        raise ReportError(str(err).replace(f"'{real}'", f"'{db}'")) from None
    try:
        with closing(connect_readonly(real)) as conn:
            (results,) = conn.execute("SELECT COUNT(*) FROM results").fetchone()
    except sqlite3.DatabaseError as err:
        raise ReportError(f"'{db}' is not a knowcomp results file ({err})") from None
    if not results:
        raise ReportError(f"results file '{db}' has no results yet; run (or resume) its study "
                          "first")  # fmt: skip


def generate_report(
    db: Path,
    out: Path,
    *,
    progress: Callable[[str], None] | None = None,
    choice_metric: str = "acc",
) -> ReportResult:
    """Write tables, plots, findings, forgetting CSVs and `report.html` into `out`;
    multiple-choice probes show `choice_metric` (`acc`, the studies' number, or `acc_norm`)."""
    from knowcomp.probes.categories import check_choice_metric

    check_choice_metric(choice_metric)
    say = progress or (lambda message: None)
    db, out = Path(db), Path(out)
    with _readable_copy(db) as source:
        check_results_file(source, shown=db)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ReportError(f"cannot create report folder '{out}' ({err.strerror})") from None
        try:
            store = ResultsStore(source, readonly=True)
        except StoreError as err:
            raise ReportError(str(err)) from None
        return _generate(store, db, out, say, choice_metric)


def _generate(store: ResultsStore, db: Path, out: Path, say: Callable[[str], None],
              choice_metric: str) -> ReportResult:  # fmt: skip
    with store:
        say(f"reading {db}")
        frame = load_frame(store, choice_metric=choice_metric)
        say(f"{frame.rows} results: {len(frame.models)} model(s), {len(frame.probes)} probe(s), "
            f"{len({p.recipe for p in frame.points})} compression(s)")  # fmt: skip
        say("comparing items with the baseline (per-fact forgetting)")
        forgetting = find_forgetting(store, frame)
        similarity = store.similarity()
    files: list[Path] = []
    tables = build_tables(frame)
    files += write_tables(tables, out / "tables")
    say(f"wrote {len(tables)} table(s) to {out / 'tables'}")
    files.append(_write_drops(frame, out / "drops.csv"))
    say("drawing plots")
    plots = draw_plots(frame, out / "plots")
    if similarity:
        plots += draw_similarity(similarity, out / "plots")
        files.append(write_similarity(similarity, out / "similarity.csv"))
    plots += draw_paper_figures(frame, out / "plots")
    files += [path for plot in plots for path in (plot.png, plot.svg, plot.csv) if path]
    say(f"wrote {len(plots)} plot(s) to {out / 'plots'}")
    files += write_forgetting(forgetting, out / "forgetting")
    findings = check_findings(frame)
    findings_path = out / "findings.md"
    findings_path.write_text(findings_markdown(findings), encoding="utf-8")
    files.append(findings_path)
    notes = _notes(frame)
    html_path = out / "report.html"
    content = ReportContent(db, frame, tables, plots, findings, forgetting,
                            [f.relative_to(out) for f in files], notes)  # fmt: skip
    html_path.write_text(render_html(content), encoding="utf-8")
    say(f"wrote {html_path}")
    return ReportResult(html_path, out, tables, plots, findings, forgetting, files, notes)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


@contextmanager
def _readable_copy(db: Path) -> Iterator[Path]:
    """`db` itself, or a temporary copy of it (with its write-ahead log) when `db` or its
    folder is read-only: opening a results file takes a write lock, even to read it."""
    if not db.is_file() or _writable(db):
        yield db
        return
    with tempfile.TemporaryDirectory(prefix="knowcomp-report-") as tmp:
        copy = Path(tmp) / db.name
        for suffix in ("", "-wal"):
            source = db.with_name(db.name + suffix)
            if source.exists():
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
        yield copy


def write_report(db: Path, out: Path) -> Path:
    """Write the whole report for results file `db` into folder `out`; returns report.html."""
    return generate_report(db, out).html


def _notes(frame: Frame) -> list[str]:
    notes = []
    missing = sorted({(p.model, p.seed) for p in frame.points if p.baseline is None})
    if missing:
        listed = "; ".join(f"{m} seed {s}" for m, s in missing)
        notes.append(f"No baseline for: {listed}. Those trials show their scores but no drop.")
    if frame.old_input_rule:
        notes.append(
            f"{len(frame.old_input_rule)} trial(s) were scored under knowcomp's old input rule "
            "(no BOS token for any tokenizer, an empty context read after end-of-text): their "
            "scores differ from lm-eval's for a tokenizer that adds a BOS token, and slightly "
            "for items whose context is empty. Rerun into a new results file to rescore them."
        )
    if frame.old_lama_ties:
        notes.append(
            f"{len(frame.old_lama_ties)} trial(s) have LAMA ranks from before knowcomp's "
            "scoring version 2, which ranked tokens tied with the object in the object's "
            "favour: a head with rows pruned to zero (structured pruning of the final layer) "
            "scored too high a P@1, P@10 and MRR there. Rerun into a new results file to "
            "rescore them."
        )
    unpaired = [p for p in frame.points if p.baseline is not None and p.drop_ci is None]
    if unpaired:
        notes.append(
            f"{len(unpaired)} of {len(frame.points)} drops have no per-item records to pair "
            "(a results file written before records were kept, or records of another "
            "protocol): they show without an interval, and findings resting on them are not "
            "tested."
        )
    try:
        import knowcomp.probes.categories  # noqa: F401
    except ImportError:
        notes.append(
            "Category averages (world knowledge / common reasoning / language understanding) "
            "are not shown: this knowcomp has no knowcomp.probes.categories."
        )
    return notes


def _write_drops(frame: Frame, path: Path) -> Path:
    """Every compressed trial x probe with its baseline: the data behind every plot, with the
    paired drop's 95% interval, p-value, items paired and test (empty without records)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(DROP_COLUMNS)
        for p in frame.points:
            c, ci = p.compression, p.drop_ci
            interval = ["", "", "", "", ""] if ci is None else [
                _num(ci.low), _num(ci.high), _num(ci.p_value), ci.n, ci.method]  # fmt: skip
            writer.writerow([
                p.model, p.sweep, p.recipe, c.kind, c.group, c.method, _num(c.level), p.seed,
                p.probe, p.kind, p.metric, _num(p.baseline), _num(p.value), _num(p.drop),
                *interval, _num(p.majority), _num(p.sparsity), _num(p.fraction),
            ])  # fmt: skip
    return path


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
