"""Studies: spec validation, the runner, the SQLite store (resume, kill -9, two writers), Ray."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.store import Owner, TrialOutcome
from knowcomp.study import (
    PRESETS,
    ResultsStore,
    RunListener,
    StoreError,
    expand,
    load_spec,
    preset_spec,
    run_study,
)
from knowcomp.study.spec import spec_from_dict
from tests.conftest import save_tiny_llama, smollm2_tokenizer

pytestmark = pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama saved as a folder, with SmolLM2's tokenizer: a real model spec."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, smollm2_tokenizer(), max_position_embeddings=512,
                    tie_word_embeddings=True)  # fmt: skip
    return folder


def _spec(model: Path, out: Path, **extra) -> dict:
    data = {
        "name": "tiny",
        "models": [str(model)],
        "probes": ["lama-trex", "piqa"],
        "limit": 1,
        "output": str(out),
        "recipes": [
            {"name": "prune/overall", "recipe": "prune:l1_unstructured:overall:{level}",
             "levels": [0.3, 0.6]},
            "quant:dynamic_int8:feed_forward",
        ],
    }  # fmt: skip
    data.update(extra)
    return data


# -- specs -------------------------------------------------------------------------------------
def test_presets_expand_to_the_studys_grid():
    grid = expand(preset_spec("global-pruning", ("m",)))
    assert grid[0].is_baseline and sum(t.is_baseline for t in grid) == 1
    assert len(grid) == 1 + 3 * 9
    assert {t.recipe for t in grid if t.level == 0.5} == {
        f"prune:l1_unstructured:{g}:0.5" for g in ("attention", "feed_forward", "overall")
    }
    quant = expand(preset_spec("global-quantization", ("m",)))
    assert sorted({t.seed for t in quant}) == [40, 50, 60]
    assert sum(t.is_baseline for t in quant) == 3  # one baseline per seed (its own subset)
    pq = expand(preset_spec("prune-quantize", ("m",)))
    assert "prune:l1_unstructured:attention:0.4,quant:dynamic_int8:attention" in {
        t.recipe for t in pq
    }
    final = expand(preset_spec("final-layer", ("m",)))
    assert len(final) == 1 + 2 * 9
    everything = expand(preset_spec("all", ("m",)))
    assert len({t.key for t in everything}) == len(everything)
    assert PRESETS["quickstart"].model == "smollm2-135m"


def test_spec_file_round_trip(tmp_path, tiny_model_dir):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_spec(tiny_model_dir, tmp_path / "r.sqlite")))
    spec = load_spec(path)
    assert spec.name == "tiny" and spec.limit == 1
    assert [r for _, r in spec.sweeps[0].recipes()] == [
        "prune:l1_unstructured:overall:0.3",
        "prune:l1_unstructured:overall:0.6",
    ]
    assert len(expand(spec)) == 4  # baseline, two levels, one fixed recipe


def test_example_spec_is_valid():
    from knowcomp.study.trials import validate

    spec = load_spec(Path(__file__).parent.parent / "examples" / "study.yaml")
    trials = validate(spec)
    assert len(trials) == 1 + 2 * 9 + 3 + 1
    assert "quant:weight_only:overall:bits=4:group_size=32" in {t.recipe for t in trials}


def test_example_baseline_study_is_valid():
    from knowcomp.study.trials import validate

    spec = load_spec(Path(__file__).parent.parent / "examples" / "smollm2-baselines.yaml")
    assert [t.sweep for t in validate(spec)] == ["baseline"] and len(spec.probes) == 14


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "blue"}, "unknown study key(s) colour"),
        ({"models": ["no/such-model-anywhere"]}, "no/such-model-anywhere"),
        ({"probes": ["lama-nope"]}, "unknown probe 'lama-nope'"),
        ({"recipes": ["prune:shrink:overall:0.5"]}, "shrink"),
        (
            {
                "recipes": [
                    {"recipe": "prune:l1_unstructured:overall:{level}", "levels": [0.5, 1.5]}
                ]
            },
            "level 1.5 is out of range",
        ),
        (
            {"recipes": [{"recipe": "prune:l1_unstructured:overall:0.5", "levels": [0.5]}]},
            "no {level} placeholder",
        ),
        ({"recipes": [{"preset": "nope"}]}, "unknown preset 'nope'"),
        ({"limit": 0}, "'limit' must be a positive integer"),
        ({"seeds": ["a"]}, "'seeds' must be a non-empty list of integers"),
    ],
)
def test_bad_specs_fail_before_any_work(tmp_path, tiny_model_dir, change, message):
    out = tmp_path / "r.sqlite"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_spec(tiny_model_dir, out, **change)))
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing was started


@pytest.mark.parametrize(
    ("probes", "lama_mode", "message"),
    [
        (["lama-trex", "piqa"], "next-token", "probe 'piqa' cannot score"),
        (["lama-trex"], "candidates", "LAMA probes in candidates mode score continuations"),
        (["triviaqa"], "next-token", "open-answer probes (generation) score continuations"),
        (["lambada"], "next-token", "language-modelling probes score continuations"),
    ],
)
def test_probes_a_model_family_cannot_run_fail_before_any_work(tmp_path, probes, lama_mode,
                                                               message):  # fmt: skip
    from tests.conftest import build_tiny

    bert = tmp_path / "bert"
    build_tiny("bert").model.save_pretrained(bert)
    out = tmp_path / "r.sqlite"
    path = tmp_path / "study.yaml"
    spec = _spec(bert, out, probes=probes, lama_mode=lama_mode)
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "an encoder model" in result.output
    assert "Traceback" not in result.output and not out.exists()
    from knowcomp.study.trials import validate

    assert validate(spec_from_dict({**spec, "probes": ["lama-trex"], "lama_mode": "next-token"}))


def test_unwritable_and_foreign_results_files(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        ResultsStore(blocker / "r.sqlite")
    with pytest.raises(StoreError, match="is a folder"):
        ResultsStore(tmp_path)
    text = tmp_path / "notes.sqlite"
    text.write_text("these are my notes, not a database" * 100)
    with pytest.raises(StoreError, match="not a knowcomp results file"):
        ResultsStore(text)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE things (x)")
    with pytest.raises(StoreError, match="not a knowcomp results file"):
        ResultsStore(other)
    old = tmp_path / "old.sqlite"
    ResultsStore(old).close()
    with sqlite3.connect(old) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="results schema 99"):
        ResultsStore(old)


def test_store_writes_a_trial_once(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    outcome = TrialOutcome(
        {"trial_key": "k1", "study": "s", "spec_hash": "h", "model": "m", "sweep": "baseline",
         "seed": 0, "lama_mode": "next-token", "dtype": "float32"},
        [{"probe": "piqa", "category": "c", "metrics": {"acc": 0.5}, "counts": {"items": 2},
          "records": [{"index": 0, "gold": 1, "chosen": 1}]}],
    )  # fmt: skip
    assert store.write(outcome) == 1
    assert store.write(outcome) == 0  # the same trial again adds nothing
    assert store.done_probes("k1") == {"piqa"}
    assert store.records("k1", "piqa") == [{"index": 0, "gold": 1, "chosen": 1}]
    assert [r["metrics"] for r in store.rows()] == [{"acc": 0.5}]


def test_claims_leave_live_trials_to_their_holder_and_take_over_dead_ones(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    me, other = Owner.me(), Owner(socket.gethostname(), os.getppid(), "someone-else")
    assert store.claim("t1", other) is None
    assert store.claim("t1", me) == other  # a live process holds it
    assert store.claim("t1", other) is None  # the holder may claim again
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = Owner(socket.gethostname(), dead.pid, "killed")
    assert store.claim("t2", ghost) is None
    assert store.claim("t2", me) is None  # its process is gone: taken over
    store.release(me)
    assert store.claim("t2", other) is None


# -- running -----------------------------------------------------------------------------------
class _Recorder(RunListener):
    def __init__(self) -> None:
        self.finished: list[str] = []

    def trial_finished(self, trial, outcome) -> None:
        self.finished.append(trial.sweep)


def test_run_stores_every_trial_and_resumes(tmp_path, tiny_model_dir):
    spec = spec_from_dict(_spec(tiny_model_dir, tmp_path / "r.sqlite"))
    recorder = _Recorder()
    summary = run_study(spec, listener=recorder)
    assert (summary.trials, summary.ran, summary.rows_added) == (4, 4, 8)
    assert recorder.finished[0] == "baseline"
    with ResultsStore(spec.output) as store:
        rows = store.rows()
        by_recipe = {(r["recipe"], r["probe"]): r for r in rows}
        pruned = by_recipe[("prune:l1_unstructured:overall:0.6", "lama-trex")]
        assert pruned["sparsity"] == pytest.approx(0.6, abs=1e-3)  # counted from the weights
        assert pruned["params_compressed"] > 0 and pruned["bytes_after"] < pruned["bytes_before"]
        assert pruned["versions"]["torch"] == torch.__version__
        assert pruned["compression"]["steps"][0]["method"] == "l1_unstructured"
        baseline = by_recipe[(None, "lama-trex")]
        assert baseline["sparsity"] == 0 and baseline["params_compressed"] == 0
        assert store.records(baseline["trial_key"], "lama-trex")[0]["relation"].startswith("P")
    # A rerun skips everything; a new probe runs only for the missing (trial, probe) pairs.
    assert run_study(spec).ran == 0
    more = replace(spec, probes=("lama-trex", "piqa", "arc-easy"))
    summary = run_study(more)
    assert (summary.ran, summary.rows_added) == (4, 4)
    with ResultsStore(spec.output) as store:
        assert len(store.rows()) == 12


def test_a_study_without_recipes_scores_the_baselines_only(tmp_path, tiny_model_dir):
    out = tmp_path / "baselines.sqlite"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_spec(tiny_model_dir, out, recipes=[], seeds=[0, 1])))
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 0, result.output
    with ResultsStore(out) as store:
        trials = store.trials()
    assert sorted((t["sweep"], t["seed"]) for t in trials) == [("baseline", 0), ("baseline", 1)]
    assert (tmp_path / "baselines-report" / "report.html").is_file()
    del_recipes = {k: v for k, v in _spec(tiny_model_dir, out).items() if k != "recipes"}
    path.write_text(yaml.safe_dump(del_recipes))
    missing = CliRunner().invoke(cli, ["run", str(path)])
    assert missing.exit_code == 2 and "needs 'recipes'" in missing.output


def test_worker_restores_the_model_between_trials(tiny_model_dir):
    """A baseline scored after a compressed trial equals one scored on a fresh model."""
    from knowcomp.study.trials import Trial
    from knowcomp.study.worker import ModelWorker

    common = {"model": str(tiny_model_dir), "seed": 0, "limit": 1, "lama_mode": "next-token",
              "dtype": "float32"}  # fmt: skip
    baseline = Trial(sweep="baseline", recipe=None, level=None, **common)
    pruned = Trial(sweep="p", recipe="prune:l1_unstructured:all_linear:0.7,"
                   "quant:dynamic_int8:all_linear", level=0.7, **common)  # fmt: skip
    used = ModelWorker(str(tiny_model_dir))
    hit = used.run(pruned, ["lama-trex"], study="s", spec_hash="h")
    after = used.run(baseline, ["lama-trex"], study="s", spec_hash="h")
    fresh = ModelWorker(str(tiny_model_dir)).run(baseline, ["lama-trex"], study="s", spec_hash="h")
    assert after.results[0]["records"] == fresh.results[0]["records"]
    assert hit.results[0]["records"] != fresh.results[0]["records"]


def _run_cli(spec_path: Path, env_extra: dict | None = None) -> subprocess.Popen:
    """`knowcomp run SPEC` in a child process that handles Ctrl-C as a user's shell would: a
    SIGINT ignored by the test process (a CI runner or a library may ignore it) would be
    inherited, and Python then installs no KeyboardInterrupt handler."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "knowcomp.cli.main", "run", str(spec_path), "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _long_spec(tmp_path: Path, model: Path, db: Path) -> Path:
    levels = [round(0.07 * i, 2) for i in range(1, 13)]
    data = _spec(model, db, recipes=[
        {"name": "prune/overall", "recipe": "prune:l1_unstructured:overall:{level}",
         "levels": levels}
    ])  # fmt: skip
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sigkill_loses_only_the_trial_in_flight(tmp_path, tiny_model_dir):
    db = tmp_path / "r.sqlite"
    spec_path = _long_spec(tmp_path, tiny_model_dir, db)
    total = len(expand(load_spec(spec_path)))
    proc = _run_cli(spec_path)
    deadline = time.time() + 240
    while _count(db, "trials") < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _count(db, "trials")
    assert 3 <= done < total, "the kill should land in the middle of the study"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # every stored trial is whole: both its probes, never one of them
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2 * done
    rerun = _run_cli(spec_path)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert f"{done} trial(s) already in the results file" in output
    assert (_count(db, "trials"), _count(db, "results")) == (total, 2 * total)


def test_two_runs_writing_one_file(tmp_path, tiny_model_dir):
    db = tmp_path / "r.sqlite"
    spec_path = _long_spec(tmp_path, tiny_model_dir, db)
    total = len(expand(load_spec(spec_path)))
    first, second = _run_cli(spec_path), _run_cli(spec_path)
    ran = 0
    for proc in (first, second):
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output
        ran += int(re.search(r"(\d+) trial\(s\) run", output).group(1))
    assert ran == total  # the two runs shared the trials: none was computed twice
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == total
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2 * total
        keys = conn.execute("SELECT COUNT(DISTINCT trial_key || probe) FROM results").fetchone()
        assert keys[0] == 2 * total


def test_results_command_lists_and_exports(tmp_path, tiny_model_dir):
    spec = spec_from_dict(_spec(tiny_model_dir, tmp_path / "r.sqlite"))
    run_study(spec)
    runner = CliRunner()
    table = runner.invoke(cli, ["results", str(spec.output), "--probe", "piqa"])
    assert table.exit_code == 0 and "prune/overall" in table.output
    csv_path = tmp_path / "r.csv"
    export = runner.invoke(cli, ["results", str(spec.output), "-f", "csv", "-o", str(csv_path)])
    assert export.exit_code == 0
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + 8 and "p@1_micro" in lines[0] and "acc" in lines[0]
    jsonl = runner.invoke(cli, ["results", str(spec.output), "-f", "jsonl", "--sweep", "baseline"])
    rows = [json.loads(line) for line in jsonl.output.splitlines()]
    assert {r["probe"] for r in rows} == {"lama-trex", "piqa"} and rows[0]["recipe"] is None
    missing = runner.invoke(cli, ["results", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_device_map_placement(tmp_path, tiny_model_dir):
    """`device_map: auto` places the model through accelerate; the study runs the same."""
    spec = spec_from_dict(_spec(tiny_model_dir, tmp_path / "r.sqlite", device_map="auto"))
    plain = replace(spec, device_map=None, output=tmp_path / "plain.sqlite")
    run_study(spec)
    run_study(plain)
    got = {(r["recipe"], r["probe"]): r["metrics"] for r in ResultsStore(spec.output).rows()}
    want = {(r["recipe"], r["probe"]): r["metrics"] for r in ResultsStore(plain.output).rows()}
    assert got == want


# -- Ray ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _ray_head(auth_mode: str) -> Iterator[str]:
    """A real Ray head node on loopback with token authentication `auth_mode`, started and
    stopped here; yields its address."""
    pytest.importorskip("ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="kc-ray-", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": auth_mode}
    subprocess.run(
        ["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        check=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_cluster():
    """A Ray head with the token authentication mode this process uses. Left unset, a recent
    Ray turns token authentication on for `ray start` once any local Ray has saved a token in
    ~/.ray, but not for a client that names an address; and a local `ray.init` earlier in this
    process sets RAY_AUTH_MODE=token here. Naming the mode keeps head and client alike."""
    with _ray_head(os.environ.get("RAY_AUTH_MODE", "disabled")) as address:
        yield address


def _stop_cluster(temp: str) -> None:
    """Stop this cluster's processes only (those whose command line names its temp folder):
    `ray stop` would stop every Ray on the machine, other runs' included."""
    import psutil

    ours = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if temp in line and proc.pid != os.getpid():
            ours.append(proc)
    for proc in ours:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(ours, timeout=20)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def test_a_token_cluster_refusing_a_client_without_one_is_one_line(tmp_path, tiny_model_dir):
    """A cluster started with token authentication and a client without RAY_AUTH_MODE=token:
    one line that names the fix, exit 2, no traceback, and the results file left as it was."""
    pytest.importorskip("ray._private.authentication", reason="this Ray has no token auth")
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(tiny_model_dir, tmp_path / "r.sqlite")))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    with _ray_head("token") as address:
        proc = subprocess.run(
            [sys.executable, "-m", "knowcomp.cli.main", "run", str(spec_path), "--no-report",
             "--executor", "ray", "--ray-address", address],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach the Ray cluster" in proc.stderr
    assert "set RAY_AUTH_MODE=token" in proc.stderr and "Traceback" not in proc.stderr
    assert _count(tmp_path / "r.sqlite", "trials") == 0


def test_ray_executor_matches_local(tmp_path, tiny_model_dir, ray_cluster):
    spec = spec_from_dict(_spec(tiny_model_dir, tmp_path / "ray.sqlite"))
    local = replace(spec, output=tmp_path / "local.sqlite")
    summary = run_study(spec, executor="ray", ray_address=ray_cluster, workers_per_model=2)
    assert (summary.ran, summary.rows_added) == (4, 8)
    run_study(local)
    ray_rows = ResultsStore(spec.output).rows()
    local_rows = {(r["trial_key"], r["probe"]): r for r in ResultsStore(local.output).rows()}
    assert len(ray_rows) == len(local_rows) == 8
    for row in ray_rows:
        twin = local_rows[(row["trial_key"], row["probe"])]
        assert row["sparsity"] == twin["sparsity"]
        assert row["metrics"] == pytest.approx(twin["metrics"], abs=1e-9)
    # resuming on Ray skips what is stored, like the local runner
    assert run_study(spec, executor="ray", ray_address=ray_cluster).ran == 0
