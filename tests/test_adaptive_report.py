"""Where adaptive results show: the report's frame and tables (`†`, the items, the confidence
sequence instead of the fixed-sample interval), `knowcomp results` (an Adaptive column, the
adaptive_* export columns) and `knowcomp run`'s end-of-trial line; results without
`--precision` show exactly as before. A results file written by hand (real SQLite) with one
baseline and one compressed trial, their records and the stored sequence."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from knowcomp.analysis.sequential import METHOD, interval_path
from knowcomp.cli.main import cli
from knowcomp.cli.run_cmd import _scored
from knowcomp.report.frame import load_frame
from knowcomp.report.stats import arms
from knowcomp.report.table import to_csv, to_html, to_latex, to_markdown
from knowcomp.report.tables import drops_table
from knowcomp.store import ResultsStore, TrialOutcome

RECIPE = "prune:l1_unstructured:overall:0.9"
POOL, USED, BASE_USED = 200, 96, 144


def _records(correct: np.ndarray) -> list[dict]:
    return [{"index": i, "gold": 0, "chosen": 0 if ok else 1} for i, ok in enumerate(correct)]


def _result(correct: np.ndarray, sequential: dict | None) -> dict:
    return {"probe": "piqa", "category": "common_reasoning",
            "metrics": {"acc": float(correct.mean())}, "counts": {"items": len(correct)},
            "records": _records(correct), "sequential": sequential}  # fmt: skip


def _trial(key: str, recipe: str | None) -> dict:
    return {"trial_key": key, "study": "s", "spec_hash": "h", "model": "m", "family": "decoder",
            "sweep": recipe or "baseline", "recipe": recipe, "level": None, "seed": 0,
            "limit_items": POOL, "lama_mode": "next-token", "dtype": "float32",
            "sparsity": 0.9 if recipe else 0.0, "params_model": 100,
            "versions": {"knowcomp input rule": "2"}}  # fmt: skip


def _write(path: Path, adaptive: bool) -> dict:
    rng = np.random.default_rng(7)
    base = rng.random(BASE_USED if adaptive else POOL) < 0.7
    ours = base.copy()
    ours[: (USED if adaptive else POOL)] &= rng.random(USED if adaptive else POOL) < 0.8
    ours = ours[: USED if adaptive else POOL]
    drop = seq_base = seq = None
    if adaptive:
        d = base[:USED].astype(float) - ours.astype(float)
        e = interval_path(d, [64, USED])[-1].scaled(100)
        drop = {"value": e.value, "low": e.low, "high": e.high, "items": e.n, "method": e.method}
        seq = {"precision": 12.0, "share": USED / POOL, "pool": POOL, "checks": [64, USED],
               "stop": "precision reached", "drop": drop}  # fmt: skip
        seq_base = {"precision": None, "share": BASE_USED / POOL, "pool": POOL, "checks": [],
                    "stop": "baseline: scored as far as its trials needed",
                    "drop": None}  # fmt: skip
    with ResultsStore(path) as store:
        store.write(TrialOutcome(_trial("b", None), [_result(base, seq_base)]))
        store.write(TrialOutcome(_trial("t", RECIPE), [_result(ours, seq)]))
    return {"drop": drop, "base": base, "ours": ours}


@pytest.fixture
def adaptive_file(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "adaptive.sqlite"
    return path, _write(path, adaptive=True)


def test_the_frame_takes_the_stored_sequence_paired_on_the_items_used(adaptive_file):
    path, made = adaptive_file
    with ResultsStore(path, readonly=True) as store:
        frame = load_frame(store)
    (point,) = frame.points
    drop = made["drop"]
    assert point.adaptive and point.score_ci is None
    assert (point.drop_ci.value, point.drop_ci.low, point.drop_ci.high) == (
        drop["value"], drop["low"], drop["high"])  # fmt: skip
    assert point.drop_ci.n == USED and point.drop_ci.method == METHOD
    # the drop is paired: the baseline's score on the trial's items, not on all of its own
    assert point.drop == pytest.approx(drop["value"])
    assert point.baseline == pytest.approx(made["base"][:USED].mean())
    assert point.baseline != pytest.approx(made["base"].mean())
    (baseline,) = frame.baselines
    assert baseline.score_ci is None  # its items were chosen by the trial's stopping


def test_report_tables_mark_the_adaptive_drop_with_its_items(adaptive_file):
    path, made = adaptive_file
    with ResultsStore(path, readonly=True) as store:
        frame = load_frame(store)
    table = drops_table(frame, arms(frame))
    d = made["drop"]
    shown = f"{d['value']:.1f} [{d['low']:.1f}, {d['high']:.1f}]† n={USED}"
    assert shown in to_markdown(table) and shown in to_html(table)
    assert "betting confidence sequence" in to_markdown(table)
    assert r"$^\dagger$" in to_latex(table) and "†" not in to_latex(table)
    (row,) = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert row["piqa items"] == str(USED) and float(row["piqa low"]) == pytest.approx(d["low"])
    assert "piqa p" not in row  # a confidence sequence has no p-value here


def test_results_show_the_adaptive_column_and_export_it(adaptive_file):
    path, made = adaptive_file
    shown = CliRunner().invoke(cli, ["results", str(path)], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert f"{USED}/{POOL} items, precision reached" in shown.output
    assert f"{BASE_USED / POOL:.0%} of its items scored" in shown.output
    exported = CliRunner().invoke(cli, ["results", str(path), "-f", "csv"])
    rows = {r["sweep"]: r for r in csv.DictReader(io.StringIO(exported.output))}
    trial = rows[RECIPE]
    assert (trial["adaptive_items"], trial["adaptive_pool"]) == (str(USED), str(POOL))
    assert trial["adaptive_stop"] == "precision reached" and trial["drop_test"] == METHOD
    assert float(trial["drop_low"]) == pytest.approx(made["drop"]["low"])
    assert trial["headline_low"] == ""  # no fixed-sample interval for an adaptive score


def test_the_run_line_shows_the_sequence_and_the_items():
    drop = {"value": 3.0, "low": 1.2, "high": 4.9, "items": 200, "method": METHOD}
    seq = {"precision": 2.0, "share": 0.4, "pool": 500, "stop": "precision reached", "drop": drop}
    line = _scored({"probe": "piqa", "metrics": {"acc": 0.5}, "sequential": seq}, None)
    assert line == ("piqa 0.500 (drop 3.0 [1.2, 4.9]† points on 200 of 500 items, "
                    "precision reached)")  # fmt: skip


def test_without_precision_nothing_is_marked(tmp_path):
    path = tmp_path / "plain.sqlite"
    _write(path, adaptive=False)
    with ResultsStore(path, readonly=True) as store:
        frame = load_frame(store)
    (point,) = frame.points
    assert not point.adaptive and point.score_ci is not None and point.drop_ci.p_value is not None
    table = drops_table(frame, arms(frame))
    assert "†" not in to_markdown(table) and "items" not in to_csv(table).splitlines()[0]
    shown = CliRunner().invoke(cli, ["results", str(path)], env={"COLUMNS": "300"})
    assert "Adaptive" not in shown.output
