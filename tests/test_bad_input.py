"""The bad-input suite: every input a hostile but fair user might give, walked through the CLI.

For each case of the table: the documented exit code (2 for bad input), exactly one line on
stderr that names the problem and says what to do, no traceback, and no file in the working
folder created, removed or changed (content and mode, before and after). Study cases also
check that no model was loaded for a trial before the error. Cases run in-process through
click's runner (fast); a sample runs through the real entry point in a subprocess, where
warnings and stray output would show.

The working folder (`arena`) is built once per session: a tiny random Llama saved with a real
tokenizer, broken copies of it, broken GGUF files, foreign and damaged SQLite files, specs,
recipes and task files, some of them not UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sqlite3
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from knowcomp.cli.main import cli
from tests.conftest import save_tiny_llama

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LATIN1 = "caf\xe9 na\xefve".encode("latin-1")  # bytes that are not UTF-8
FULL_WIDTH_HALF = "\uff10.\uff15"  # "０.５": Python's float() reads it as 0.5


# -- the arena ----------------------------------------------------------------------------------
def _tokenizer():
    """SmolLM2's tokenizer where it is installed (a real BPE vocabulary), else a word-level one."""
    try:
        from tests.conftest import smollm2_tokenizer

        return smollm2_tokenizer()
    except Exception:  # the package is optional: fall back to a tokenizer built here
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {"[UNK]": 0} | {f"w{i}": i for i in range(1, 120)}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="w1")


def _save_tiny_llama(folder: Path, tokenizer) -> None:
    save_tiny_llama(folder, tokenizer, hidden_size=8, num_hidden_layers=1,
                    intermediate_size=16, tie_word_embeddings=True)  # fmt: skip


def _copy_model(good: Path, folder: Path, drop: tuple[str, ...] = ()) -> Path:
    folder.mkdir()
    for item in good.iterdir():
        if item.name not in drop and not item.name.startswith(drop):
            (folder / item.name).write_bytes(item.read_bytes())
    return folder


def _sqlite(path: Path, *statements: str, wal: bool = False) -> None:
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode = WAL")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _results_file(path: Path, model: str) -> None:
    """A real knowcomp results file with one stored trial (written by the store itself)."""
    from knowcomp.store import ResultsStore, TrialOutcome

    trial = {"trial_key": "k1", "study": "s", "spec_hash": "h", "model": model,
             "sweep": "baseline", "seed": 0, "limit_items": 3, "lama_mode": "next-token",
             "dtype": "float32"}  # fmt: skip
    result = {"probe": "lama-squad", "metrics": {"p@1_micro": 0.5}, "counts": {"facts": 2}}
    with ResultsStore(path) as store:
        store.write(TrialOutcome(trial, [result]))


def _spec(models, *, output: str = "runs/out.sqlite", **extra) -> dict:
    sweep = {"recipe": "prune:l1_unstructured:overall:{level}", "levels": [0.5]}
    data = {"models": models, "probes": ["lama-squad"], "limit": 2, "output": output,
            "data_dir": str(SHARED_DATA), "recipes": [sweep]}  # fmt: skip
    return {**data, **extra}


def _write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="session")
def arena(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arena")
    good = root / "good"
    _save_tiny_llama(good, _tokenizer())
    # Broken models
    _copy_model(good, root / "no-tokenizer", drop=("tokenizer", "special_tokens", "vocab"))
    (_copy_model(good, root / "config-empty") / "config.json").write_text("{}")
    (_copy_model(good, root / "config-invalid") / "config.json").write_text('{"model_type": ')
    _copy_model(good, root / "no-weights", drop=("model.safetensors",))
    truncated = _copy_model(good, root / "weights-truncated") / "model.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (root / "empty.gguf").write_bytes(b"")
    (root / "random.gguf").write_bytes(os.urandom(4096))
    (root / "header-1kb.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(1016))
    (root / "two-ggufs").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (root / "two-ggufs" / name).write_bytes(b"GGUF")
    (root / "notes.txt").write_text("not a model\n")
    (root / "a-folder").mkdir()
    (root / "a-folder" / "keep.txt").write_text("the user's\n")
    # Files that are not ours, or not what they claim
    (root / "foreign.json").write_text('{"mine": true}\n')
    (root / "foreign.json").chmod(0o640)
    _sqlite(root / "foreign.sqlite", "CREATE TABLE people (name TEXT)",
            "INSERT INTO people VALUES ('ada')")  # fmt: skip
    _sqlite(root / "foreign-wal.sqlite", "CREATE TABLE t (x)", wal=True)
    (root / "empty.sqlite").write_bytes(b"")
    (root / "text.sqlite").write_text("id,name\n1,ada\n")
    _results_file(root / "results.sqlite", "good")
    _results_file(root / "newer.sqlite", "good")
    _sqlite(root / "newer.sqlite", "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    _sqlite(root / "no-results.sqlite", "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    # Specs
    # fmt: off
    specs = {
        "spec-ok": _spec(["good"]),
        "spec-two-models-second-broken": _spec(["good", "weights-truncated"]),
        "spec-second-no-tokenizer": _spec(["good", "no-tokenizer"]),
        "spec-bf16-int8": _spec(["good"], dtype="bfloat16",
                                recipes=["quant:dynamic_int8:overall"]),
        "spec-fp16-int8": _spec(["good"], dtype="float16",
                                recipes=["quant:dynamic_int8:attention"]),
        "spec-device-foo": _spec(["good"], device="foo"),
        "spec-device-cuda": _spec(["good"], device="cuda"),
        "spec-device-mps": _spec(["good"], device="mps"),
        "spec-device-map-dict": _spec(["good"], device_map={"": 0}),
        "spec-device-map-nope": _spec(["good"], device_map="everywhere"),
        "spec-dtype-int4": _spec(["good"], dtype="int4"),
        "spec-models-string": _spec("good"),
        "spec-seeds-scalar": _spec(["good"], seeds=0),
        "spec-precision-zero": _spec(["good"], precision=0),
        "spec-precision-text": _spec(["good"], precision="tight"),
        "spec-seeds-repeated": _spec(["good"], seeds=[1, 1]),
        "spec-levels-repeated": _spec(["good"], recipes=[
            {"recipe": "prune:l1_unstructured:overall:{level}", "levels": [0.3, 0.3]}]),
        "spec-level-tiny": _spec(["good"], recipes=[
            {"recipe": "prune:l1_unstructured:overall:{level}", "levels": ["1e-400"]}]),
        "spec-level-full-width": _spec(["good"], recipes=[
            {"recipe": "prune:l1_unstructured:overall:{level}", "levels": [FULL_WIDTH_HALF]}]),
        "spec-level-twice": _spec(["good"],
                                  recipes=["prune:l1_unstructured:overall:0.2:level=0.3"]),
        "spec-models-repeated": _spec(["good", "good"]),
        "spec-output-list": _spec(["good"], output=["a", "b"]),
        "spec-foreign-out": _spec(["good"], output="foreign.sqlite"),
        "spec-empty-out": _spec(["good"], output="empty.sqlite"),
        "spec-unknown-key": _spec(["good"], colour="blue"),
    }
    # fmt: on
    for name, data in specs.items():
        _write_yaml(root / f"{name}.yaml", data)
    (root / "spec-duplicate-key.yaml").write_text(
        (root / "spec-ok.yaml").read_text() + "limit: 3\n"
    )
    (root / "spec-syntax.yaml").write_text("models: [good\nrecipes: []\n")
    (root / "spec-latin1.yaml").write_bytes(b"name: " + LATIN1 + b"\nmodels: [good]\nrecipes: []\n")
    (root / "spec-list.yaml").write_text("- good\n")
    # Recipes and task files
    (root / "recipe-latin1.yaml").write_bytes(b"- method: l1_unstructured\n  group: " + LATIN1)
    (root / "recipe-duplicate.yaml").write_text(
        "- method: l1_unstructured\n  group: overall\n  level: 0.2\n  level: 0.4\n"
    )
    (root / "recipe-syntax.yaml").write_text("- method: [l1\n")
    (root / "facts.jsonl").write_text(
        '{"country": "France", "capital": "Paris"}\n{"capital": "Rome"}\n'
    )
    (root / "facts-latin1.jsonl").write_bytes(b'{"country": "' + LATIN1 + b'", "capital": "x"}\n')
    clozes = (("cloze-missing", "facts.jsonl"), ("cloze-latin1", "facts-latin1.jsonl"))
    for name, data_file in clozes:
        _write_yaml(root / f"{name}.yaml", {"type": "cloze", "name": name, "file": data_file,
                    "subject": "country", "object": "capital",
                    "template": "The capital of [X] is [Y] ."})  # fmt: skip
    (root / "task-latin1.yaml").write_bytes(b"name: " + LATIN1 + b"\nfile: x.jsonl\n")
    (root / ".cache").mkdir()
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under `root`: content hash (files) and mode."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(root))] = (digest, stat.S_IMODE(info.st_mode))
    return state


def changes(before: dict, after: dict) -> list[str]:
    return sorted(
        [f"created {p}" for p in after.keys() - before.keys()]
        + [f"removed {p}" for p in before.keys() - after.keys()]
        + [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    )


@pytest.fixture
def in_arena(arena, monkeypatch):
    """Run in the arena, with knowcomp's caches inside it (so a cache write shows too), and
    count the models a study loads for its trials."""
    monkeypatch.chdir(arena)
    monkeypatch.setenv("KNOWCOMP_CACHE", str(arena / ".cache"))
    monkeypatch.setenv("KNOWCOMP_DATA", str(SHARED_DATA))
    from knowcomp.study import worker

    loads: list[str] = []
    real_init = worker.ModelWorker.__init__

    def counting_init(self, model, *args, **kwargs):
        loads.append(model)
        real_init(self, model, *args, **kwargs)

    monkeypatch.setattr(worker.ModelWorker, "__init__", counting_init)
    return arena, loads


# -- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """`args` to the CLI, run in the arena; `says`: fragments the one stderr line must hold."""

    id: str
    args: tuple[str, ...]
    says: tuple[str, ...]
    needs: str = ""  # "data": the shared data; "no-cuda" / "no-mps": skipped where present
    code: int = 2  # "data": the shared data; "no-cuda" / "no-mps": skipped where present


# id | command line (shlex) | fragments of the one stderr line, "|"-separated | needs
EVAL = "eval good --probes lama-squad --limit 1"
# fmt: off
TABLE = [
    # 1. broken models: one line, before any work
    ("gguf-empty", "eval empty.gguf -p lama-squad", "empty.gguf is empty|pass a complete"),
    ("gguf-random-bytes", "eval random.gguf -p lama-squad", "not a GGUF file"),
    ("gguf-1kb-header-only", "eval header-1kb.gguf -p lama-squad", "truncated or damaged"),
    ("config-empty", "eval config-empty -p lama-squad",
     "config.json cannot be read|restore config.json"),
    ("config-invalid-json", "eval config-invalid -p lama-squad", "config.json cannot be read"),
    ("weights-missing", "eval no-weights -p lama-squad", "no weights in"),
    ("weights-truncated", "eval weights-truncated -p lama-squad",
     "model.safetensors is truncated"),
    ("no-tokenizer-eval", "eval no-tokenizer -p lama-squad --limit 1",
     "no usable tokenizer|copy the tokenizer files", "data"),
    ("two-ggufs", "eval two-ggufs -p lama-squad", "holds 2 .gguf files|pass one of them"),
    ("model-not-a-model-file", "eval notes.txt -p lama-squad", "not a .gguf"),
    ("model-missing", "eval ./nowhere -p lama-squad", "does not exist"),
    ("study-second-model-broken", "run spec-two-models-second-broken.yaml",
     "weights-truncated|truncated"),
    ("study-second-model-no-tokenizer", "run spec-second-no-tokenizer.yaml",
     "no usable tokenizer"),
    # 2. device and dtype, with each method
    ("bf16-dynamic-int8", "run spec-bf16-int8.yaml", "needs a float32 model|backend=torchao"),
    ("fp16-dynamic-int8", "run spec-fp16-int8.yaml", "needs a float32 model"),
    ("device-foo", "run spec-device-foo.yaml", "unknown device 'foo'|choose cpu"),
    ("device-cuda-without-gpu", "run spec-device-cuda.yaml", "no CUDA GPU", "no-cuda"),
    ("device-mps-without-mps", "run spec-device-mps.yaml", "MPS", "no-mps"),
    ("device-map-dict", "run spec-device-map-dict.yaml", "'device_map' must be"),
    ("device-map-unknown", "run spec-device-map-nope.yaml",
     "device_map 'everywhere'|choose one of"),
    ("dtype-unknown", "run spec-dtype-int4.yaml", "unknown dtype 'int4'"),
    # 3. eval --out
    ("eval-out-foreign-file", f"{EVAL} --out foreign.json", "not written by knowcomp|--force"),
    ("eval-out-folder", f"{EVAL} --out a-folder", "is a folder"),
    ("eval-out-under-a-file", f"{EVAL} --out notes.txt/r.json", "is a file, not a folder"),
    # 4. reading commands on files that are not knowcomp's
    ("results-foreign-sqlite", "results foreign.sqlite", "not a knowcomp results file"),
    ("results-foreign-wal-sqlite", "results foreign-wal.sqlite", "not a knowcomp results file"),
    ("results-empty-file", "results empty.sqlite", "is an empty file"),
    ("results-text-file", "results text.sqlite", "not an SQLite file|written by `knowcomp run`"),
    ("results-newer-schema", "results newer.sqlite", "results schema 99|version that wrote it"),
    ("results-folder", "results a-folder", "is a folder"),
    ("results-missing", "results nowhere.sqlite", "does not exist"),
    ("results-no-match", "results results.sqlite --model other", "no results in"),
    ("report-foreign-sqlite", "report foreign.sqlite -o rep", "not a knowcomp results file"),
    ("report-foreign-wal-sqlite", "report foreign-wal.sqlite -o rep",
     "not a knowcomp results file"),
    ("report-empty-file", "report empty.sqlite -o rep", "is an empty file"),
    ("report-newer-schema", "report newer.sqlite -o rep",
     "results schema 99|version that wrote it"),
    ("report-not-knowcomp-meta", "report no-results.sqlite -o rep",
     "not a knowcomp results file"),
    ("run-out-foreign-sqlite", "run spec-foreign-out.yaml",
     "not a knowcomp results file|choose another --out"),
    ("run-out-empty-file", "run spec-empty-out.yaml", "is an empty file"),
    ("run-out-override-foreign", "run spec-ok.yaml --out foreign.sqlite",
     "not a knowcomp results file"),
    # 5. results -o
    ("results-out-under-a-file", "results results.sqlite -f csv -o notes.txt/x.csv",
     "is a file, not a folder"),
    ("results-out-folder", "results results.sqlite -f csv -o a-folder", "is a folder"),
    ("results-out-without-format", "results results.sqlite -o x.csv", "--format csv"),
    # 6. files that are not UTF-8
    ("spec-not-utf8", "run spec-latin1.yaml", "not UTF-8|save it as UTF-8"),
    ("recipe-file-not-utf8", "compress good -r recipe-latin1.yaml", "not UTF-8"),
    ("cloze-jsonl-not-utf8", "eval good -p cloze-latin1.yaml", "not UTF-8"),
    ("task-yaml-not-utf8", "eval good -p task-latin1.yaml", "not UTF-8"),
    # 7. values once silently accepted
    ("level-positional-and-keyword",
     "compress good -r prune:l1_unstructured:overall:0.2:level=0.3", "got a level twice"),
    ("level-underflow", "compress good -r prune:l1_unstructured:overall:1e-400",
     "not a number in ASCII digits"),
    ("level-full-width", f"compress good -r prune:l1_unstructured:overall:{FULL_WIDTH_HALF}",
     "ASCII digits"),
    ("option-full-width", "compress good -r prune:nm:overall:n=\uff12:m=4", "n must be int"),
    ("option-nan", "compress good -r prune:l1_unstructured:overall:nan", "not a number"),
    ("option-twice", "compress good -r prune:nm:overall:n=2:n=3:m=4", "sets 'n' twice"),
    ("recipe-yaml-duplicate-key", "compress good -r recipe-duplicate.yaml",
     "key 'level' is given twice|line 4"),
    ("spec-duplicate-key", "run spec-duplicate-key.yaml",
     "key 'limit' is given twice|first on line"),
    ("spec-models-string", "run spec-models-string.yaml", "'models' must be a list|models: ["),
    ("spec-seeds-scalar", "run spec-seeds-scalar.yaml", "'seeds' must be a list"),
    ("spec-seeds-repeated", "run spec-seeds-repeated.yaml", "repeat 1"),
    ("spec-levels-repeated", "run spec-levels-repeated.yaml", "repeat 0.3"),
    ("spec-level-underflow", "run spec-level-tiny.yaml", "ASCII digits"),
    ("spec-level-full-width", "run spec-level-full-width.yaml", "ASCII digits"),
    ("spec-level-twice", "run spec-level-twice.yaml", "got a level twice"),
    ("spec-models-repeated", "run spec-models-repeated.yaml", "repeat good"),
    ("spec-output-not-a-string", "run spec-output-list.yaml", "'output' must be a string"),
    ("seeds-option-empty", "run spec-ok.yaml --seeds ''", "--seeds '' must be"),
    ("seeds-option-full-width", "run spec-ok.yaml --seeds \uff11", "must be integers"),
    ("seeds-option-repeated", "run spec-ok.yaml --seeds 1,1", "repeats"),
    ("probes-option-empty", "run spec-ok.yaml --probes ,", "--probes is empty"),
    ("precision-zero", "run spec-ok.yaml --precision 0", "precision must be a positive number"),
    ("precision-negative", "run spec-ok.yaml --precision -2", "positive number|--precision 2"),
    ("precision-text", "run spec-ok.yaml --precision tight", "got 'tight'"),
    ("precision-nan", "run spec-ok.yaml --precision nan", "precision must be a positive"),
    ("precision-infinite", "run spec-ok.yaml --precision inf", "precision must be a positive"),
    ("spec-precision-zero", "run spec-precision-zero.yaml", "precision must be a positive"),
    ("spec-precision-text", "run spec-precision-text.yaml", "got 'tight'"),
    # 8. messages that used to mislead
    ("compress-out-is-a-file",
     "compress good -r prune:l1_unstructured:overall:0.2 --out notes.txt --force",
     "is a file; compress saves a folder"),
    ("spec-path-is-a-folder", "run a-folder", "is a folder, not a file"),
    ("spec-yaml-syntax-line", "run spec-syntax.yaml", "line 2|not valid YAML"),
    ("recipe-yaml-syntax-line", "compress good -r recipe-syntax.yaml", "line 2|not valid YAML"),
    ("cloze-line-missing-field", "eval good -p cloze-missing.yaml",
     "line 2: no field 'country'|--skip-malformed", "data"),
    ("spec-not-a-mapping", "run spec-list.yaml", "is not a mapping"),
    # Regression list: inputs handled before issue 17
    ("unknown-method", "compress good -r prune:shrink:overall:0.5",
     "unknown compression method 'shrink'"),
    ("unknown-group", "compress good -r prune:l1_unstructured:nowhere:0.5", "nowhere"),
    ("level-out-of-range", "compress good -r prune:l1_unstructured:overall:1.5",
     "level must be a fraction"),
    ("quantize-then-prune",
     "compress good -r quant:dynamic_int8:overall,prune:l1_unstructured:overall:0.5",
     "prune first, then quantize"),
    ("empty-recipe", "compress good -r ' '", "empty recipe"),
    ("unknown-probe", "eval good --probes lama-nope", "unknown probe 'lama-nope'"),
    ("missing-dataset", f"{EVAL} --data-dir a-folder", "is missing"),
    ("spec-missing", "run nowhere.yaml", "does not exist"),
    ("spec-unknown-key", "run spec-unknown-key.yaml", "unknown study key(s) colour"),
    ("run-nothing", "run", "nothing to run"),
    ("run-spec-and-preset", "run spec-ok.yaml --preset quickstart", "give one of them"),
    ("unknown-preset", "run --preset nope", "unknown preset 'nope'"),
    ("report-missing", "report nowhere.sqlite", "does not exist"),
    # click's own usage errors, one line too
    ("option-out-of-range", "eval good -p lama-squad --limit 0",
     "Invalid value for '--limit'|--help"),
    ("unknown-command", "evl good", "No such command 'evl'|--help"),
    ("missing-argument", "eval", "Missing argument 'MODEL'|eval --help"),
    ("report-out-is-a-file", "report results.sqlite -o notes.txt", "is a file|--help"),
    ("reuse-memory-negative", "run spec-ok.yaml --reuse-memory -1",
     "Invalid value for '--reuse-memory'|--help"),
]
# fmt: on
CASES = [
    Case(row[0], tuple(shlex.split(row[1])), tuple(row[2].split("|")), *row[3:]) for row in TABLE
]


def _skip_reason(needs: str) -> str | None:
    if needs == "data" and not SHARED_DATA.is_dir():
        return "../shared/data is not here"
    if needs == "no-cuda" and torch.cuda.is_available():
        return "a CUDA GPU is here"
    if needs == "no-mps" and torch.backends.mps.is_available():
        return "MPS is here"
    return None


def check_one_line(stderr: str, says: tuple[str, ...]) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in stderr
    for fragment in says:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert ";" in lines[0], f"no fix given after the problem: {lines[0]!r}"


@pytest.mark.integration
@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clean_line_and_touches_nothing(in_arena, bad: Case):
    arena, loads = in_arena
    if reason := _skip_reason(bad.needs):
        pytest.skip(reason)
    before = snapshot(arena)
    result = CliRunner().invoke(cli, list(bad.args))
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught exception
    assert result.exit_code == bad.code, (result.stdout, result.stderr)
    check_one_line(result.stderr, bad.says)
    assert changes(before, snapshot(arena)) == []
    assert loads == []  # no study loaded a model for a trial before the error


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


# -- the real entry point -------------------------------------------------------------------------
SUBPROCESS_SAMPLE = [  # one per area; each process pays torch's import (seconds)
    "weights-truncated", "study-second-model-broken", "results-foreign-wal-sqlite",
    "spec-not-utf8",
]  # fmt: skip


@pytest.mark.integration
def test_sample_through_the_real_entry_point(arena, tmp_path):
    """One process for each sampled case, as a user runs it: exit code, one stderr line with
    nothing else (no warning, no progress residue), and no file touched."""
    env = {**os.environ, "KNOWCOMP_CACHE": str(arena / ".cache"),
           "KNOWCOMP_DATA": str(SHARED_DATA), "PYTHONWARNINGS": "default"}  # fmt: skip
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    by_id = {c.id: c for c in CASES}
    for case_id in SUBPROCESS_SAMPLE:
        bad = by_id[case_id]
        before = snapshot(arena)
        done = subprocess.run(
            [sys.executable, "-m", "knowcomp.cli.main", *bad.args],
            cwd=arena, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == bad.code, (case_id, done.stderr)
        check_one_line(done.stderr, bad.says)
        assert changes(before, snapshot(arena)) == [], case_id


# -- what reading commands and --out may and may not do --------------------------------------------
def test_results_reads_without_changing_the_file(in_arena):
    arena, _ = in_arena
    before = snapshot(arena)
    result = CliRunner().invoke(cli, ["results", "results.sqlite"])
    assert result.exit_code == 0, result.stderr
    assert "lama-squad" in result.stdout and "Limit" in result.stdout
    assert changes(before, snapshot(arena)) == []


def test_results_export_creates_its_folder_with_umask_modes(in_arena):
    arena, _ = in_arena
    out = arena / "exports" / "new" / "r.csv"
    try:
        result = CliRunner().invoke(cli, ["results", "results.sqlite", "-f", "csv", "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        assert out.read_text().startswith("model,sweep")
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    finally:
        import shutil

        shutil.rmtree(arena / "exports", ignore_errors=True)


@pytest.mark.integration
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_eval_out_replaces_only_with_force_and_keeps_the_mode(in_arena, tmp_path):
    target = tmp_path / "theirs.json"
    target.write_text('{"mine": true}\n')
    target.chmod(0o640)
    args = [*shlex.split(EVAL), "--out", str(target)]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and json.loads(target.read_text()) == {"mine": True}
    forced = CliRunner().invoke(cli, [*args, "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(target.read_text())["complete"] is True
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its mode
    again = CliRunner().invoke(cli, args)  # now knowcomp's own: replaced without --force
    assert again.exit_code == 0, again.stderr
    fresh = tmp_path / "fresh.json"
    assert CliRunner().invoke(cli, [*shlex.split(EVAL), "--out", str(fresh)]).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.json", "theirs.json"]


def test_compress_without_a_tokenizer_skips_the_drift_note_and_says_why(in_arena):
    result = CliRunner().invoke(
        cli, ["compress", "no-tokenizer", "-r", "prune:l1_unstructured:overall:0.5"]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "no usable tokenizer" in result.stdout and "drift note) are skipped" in result.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_folders_fail_before_work(in_arena, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for args in (
            [*shlex.split(EVAL), "--out", str(locked / "r.json")],
            ["results", "results.sqlite", "-f", "csv", "-o", str(locked / "r.csv")],
        ):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 2
            check_one_line(result.stderr, ("is not writable",))
    finally:
        locked.chmod(0o700)


def test_eval_interrupted_before_any_probe_says_nothing_was_written(in_arena, monkeypatch):
    from knowcomp.probes.lama.probes import LamaSquad

    def interrupt(self, loaded, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(LamaSquad, "run", interrupt)
    result = CliRunner().invoke(cli, [*shlex.split(EVAL), "--out", "never.json"])
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted: no results were written"
    assert not Path("never.json").exists()


def test_saved_models_and_the_gguf_cache_get_umask_modes(in_arena, tmp_path):
    """safetensors writes 0600 and mkdtemp makes 0700: what knowcomp writes follows the umask,
    and files already in a --force folder keep theirs."""
    from knowcomp.models.sources import write_cache_atomically

    umask = os.umask(0o022)
    try:
        out = tmp_path / "saved"
        out.mkdir()
        (out / "theirs.txt").write_text("x")
        (out / "theirs.txt").chmod(0o600)
        result = CliRunner().invoke(cli, ["compress", "good", "-r",
                                          "prune:l1_unstructured:overall:0.5", "--out", str(out),
                                          "--force"])  # fmt: skip
        assert result.exit_code == 0, result.stderr
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
        assert modes.pop("theirs.txt") == 0o600
        assert "model.safetensors" in modes and set(modes.values()) == {0o644}
        cache = tmp_path / "cache" / "model-abc"
        write_cache_atomically(cache, lambda tmp: (tmp / "w.bin").write_bytes(b"1"))
        assert stat.S_IMODE(cache.stat().st_mode) == 0o755
    finally:
        os.umask(umask)
