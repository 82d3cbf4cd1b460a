"""What a study run guarantees beyond `kill -9` and two writers (tests/test_study.py): Ctrl-C
keeps what is stored and says so, a resumed study stores the same bytes, a rerun is bit-
identical, and the summary of a shared run tells stored trials from unfinished ones."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from knowcomp.store import Owner, TrialOutcome
from knowcomp.study import ResultsStore, run_study
from knowcomp.study.runner import PendingTrial, RunSummary, _count_left
from knowcomp.study.spec import spec_from_dict
from knowcomp.study.trials import Trial
from tests.test_study import _count, _run_cli, _spec
from tests.test_study import tiny_model_dir as tiny_model_dir  # the shared fixture

QUICK = {"probes": ["lama-squad", "piqa"], "limit": 2}  # small probes: the guarantees, not scores
RESULT_COLUMNS = "trial_key, probe, category, metrics, counts, notes"


def _stored(db: Path) -> dict[tuple[str, str], tuple]:
    """Every result row's content (not its timings) and its per-item records, by key."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(f"SELECT {RESULT_COLUMNS} FROM results").fetchall()
        records = dict(((k, p), d) for k, p, d in conn.execute("SELECT * FROM records"))
    return {(r[0], r[1]): (*r[2:], records.get((r[0], r[1]))) for r in rows}


@pytest.mark.integration
def test_sigint_keeps_stored_trials_says_so_and_resumes_byte_identical(tmp_path, tiny_model_dir):
    db = tmp_path / "r.sqlite"
    spec_path = tmp_path / "study.yaml"
    # enough trials that the study cannot finish between two polls (a tiny trial takes ~0.2 s)
    levels = [round(i / 50, 2) for i in range(1, 41)]
    sweep = {"recipe": "prune:l1_unstructured:overall:{level}", "levels": levels}
    spec_path.write_text(yaml.safe_dump(_spec(tiny_model_dir, db, **QUICK, recipes=[sweep])))
    proc = _run_cli(spec_path)
    deadline = time.time() + 240
    while _count(db, "trials") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert output.strip().splitlines()[-1] == (
        f"interrupted: finished trials are kept in {db}; rerun the same command to resume"
    )
    assert "Traceback" not in output
    kept = _stored(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # released
    rerun = _run_cli(spec_path)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    after = _stored(db)
    assert {key: after[key] for key in kept} == kept  # resuming rewrote nothing


@pytest.mark.integration
def test_a_rerun_into_a_new_file_is_bit_identical(tmp_path, tiny_model_dir):
    first = spec_from_dict(_spec(tiny_model_dir, tmp_path / "a.sqlite", **QUICK))
    second = spec_from_dict(_spec(tiny_model_dir, tmp_path / "b.sqlite", **QUICK))
    run_study(first)
    run_study(second)
    a, b = _stored(first.output), _stored(second.output)
    assert a == b and len(a) == 8


def test_summary_tells_trials_stored_by_another_run_from_unfinished_ones(tmp_path):
    """A trial another run held and has stored is not 'left' to it; one still unfinished names
    its holder, and says when that process has ended."""
    db = tmp_path / "r.sqlite"
    trials = [Trial("m", "s", f"prune:l1_unstructured:overall:0.{i}", None, 0, 1, "next-token",
                    "float32") for i in (1, 2, 3)]  # fmt: skip
    with ResultsStore(db) as store:
        row = {"study": "s", "spec_hash": "h", "model": "m", "sweep": "s", "seed": 0,
               "lama_mode": "next-token", "dtype": "float32"}  # fmt: skip
        result = {"probe": "p", "metrics": {"acc": 1.0}, "counts": {"items": 1}}
        store.write(TrialOutcome({**row, "trial_key": trials[0].key}, [result]))
        here = socket.gethostname()
        alive = Owner(here, 1, "t1")  # pid 1 is always running
        ended = Owner(here, _ended_pid(), "t2")
        left = [(PendingTrial(trials[0], ["p"]), alive), (PendingTrial(trials[1], ["p"]), alive),
                (PendingTrial(trials[2], ["p"]), ended)]  # fmt: skip
        summary = RunSummary(3, 0)
        _count_left(store, left, summary)
    assert summary.stored_by_others == 1
    assert summary.left_to_others == {
        alive.describe(): 1,
        f"{ended.describe()}, which has ended": 1,
    }


def _ended_pid() -> int:
    """The pid of a process that has ended (a child that exited and was reaped)."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_the_reliability_guarantees_are_documented():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Reliability", 1)[1].split("\n## ", 1)[0]
    for guarantee in ("kill -9", "Ctrl-C", "Concurrent runs", "bit-identical", "umask", "--force"):
        assert guarantee in section, guarantee
    for test_file in ("test_study.py", "test_reliability.py", "test_bad_input.py",
                      "test_fuzz.py"):  # fmt: skip
        assert test_file in section, test_file


OPEN_AT = """
import sys, time
from knowcomp.store import ResultsStore
start = float(sys.argv[2])
while time.time() < start:
    pass
ResultsStore(sys.argv[1]).close()
"""


@pytest.mark.integration
def test_runs_creating_one_results_file_at_once_never_see_it_half_made(tmp_path):
    """Runs that start together on a new `--out` all open it: none sees an empty or schema-less
    file (which it would refuse as a stranger's), and no draft is left beside it."""
    import subprocess
    import sys

    for round_ in range(4):
        db = tmp_path / f"r{round_}.sqlite"
        start = time.time() + 3  # after every interpreter has started
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(db), str(start)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]  # fmt: skip
        errors = [proc.communicate(timeout=120)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 6, errors
        with ResultsStore(db, readonly=True) as store:
            assert store.trials() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"r{i}.sqlite" for i in range(4)]


def test_a_results_file_is_created_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    def no_links(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("knowcomp.store.os.link", no_links)
    db = tmp_path / "r.sqlite"
    ResultsStore(db).close()
    with ResultsStore(db, readonly=True) as store:
        assert store.trials() == []
    assert [p.name for p in tmp_path.iterdir()] == ["r.sqlite"]
