"""One pipeline under every command: a one-shot `eval` and a one-trial study compute the same
numbers, and every command that runs a model takes and records `--device` and `--dtype`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.models import load_model
from knowcomp.store import ResultsStore
from knowcomp.study import load_spec, run_study
from tests.conftest import build_tiny, save_tiny_llama
from tests.test_models import _save_tiny_with_tokenizer
from tests.test_recovery import write_corpus

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
RECIPE = "prune:l1_unstructured:overall:0.5"


@pytest.fixture(scope="module")
def smol_tiny(tmp_path_factory) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer, so the probes read real words."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, load_model("smollm2-135m").tokenizer, max_position_embeddings=512)
    return folder


@pytest.fixture(scope="module")
def word_tiny(tmp_path_factory) -> Path:
    """A random Llama with a word-level tokenizer: the cheapest model every command runs."""
    folder = tmp_path_factory.mktemp("word-llama")
    _save_tiny_with_tokenizer(build_tiny("llama"), folder)
    return folder


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.real_model
@needs_data
def test_eval_and_a_one_trial_study_give_identical_results(tmp_path, smol_tiny):
    probes, limit = ["lama-trex", "piqa"], 2
    out = tmp_path / "eval.json"
    _invoke(["eval", str(smol_tiny), "-p", ",".join(probes), "--limit", str(limit), "-r", RECIPE,
             "--out", str(out)])  # fmt: skip
    by_eval = {r["probe"]: r for r in json.loads(out.read_text())["results"]}
    spec_path = tmp_path / "one.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "one", "models": [str(smol_tiny)], "probes": probes, "limit": limit,
        "output": str(tmp_path / "one.sqlite"), "recipes": [RECIPE],
    }))  # fmt: skip
    run_study(load_spec(spec_path))
    with ResultsStore(tmp_path / "one.sqlite", readonly=True) as store:
        trial = next(t for t in store.trials() if t["recipe"] == RECIPE)
        for probe in probes:
            stored = store.records(trial["trial_key"], probe)
            assert stored == by_eval[probe]["records"]  # bit-identical, item by item
        rows = {r["probe"]: r for r in store.rows() if r["trial_key"] == trial["trial_key"]}
    for probe in probes:
        assert rows[probe]["metrics"] == by_eval[probe]["metrics"]
    assert trial["versions"]["device"] == "cpu" and trial["versions"]["dtype"] == "float32"
    _same_headline_everywhere(tmp_path / "one.sqlite", by_eval["piqa"]["metrics"], RECIPE)


def _same_headline_everywhere(db: Path, piqa: dict, recipe: str) -> None:
    """PIQA's headline is `acc` (not `acc_norm`) in `results`, the report's frame and the
    category averages alike."""
    import csv
    import io

    from knowcomp.probes.base import ProbeResult
    from knowcomp.probes.categories import category_averages, headline_name
    from knowcomp.report.frame import load_frame

    assert headline_name(piqa) == "acc"
    exported = list(csv.DictReader(io.StringIO(_invoke(["results", str(db), "-f", "csv"]))))
    mine = next(r for r in exported if r["probe"] == "piqa" and r["recipe"] == recipe)
    assert (mine["headline_metric"], float(mine["headline"])) == ("acc", piqa["acc"])
    with ResultsStore(db, readonly=True) as store:
        frame = load_frame(store)
    point = next(p for p in frame.points if p.probe == "piqa")
    assert (point.metric, point.value) == ("acc", piqa["acc"])
    result = ProbeResult(probe="piqa", category="common-reasoning", metrics=piqa, counts={})
    layout = category_averages([result])
    assert layout.metrics["piqa"] == "acc"


@needs_data
def test_every_command_takes_and_records_device_and_dtype(tmp_path, word_tiny):
    model, where = str(word_tiny), ["--device", "cpu", "--dtype", "bfloat16"]
    corpus = write_corpus(tmp_path / "corpus.txt")

    out = tmp_path / "eval.json"
    _invoke(["eval", model, "-p", "piqa", "--limit", "2", "--out", str(out), *where])
    assert json.loads(out.read_text())["dtype"] == "bfloat16"

    report = json.loads(_invoke(["compress", model, "-r", RECIPE, "--json", *where]))
    assert report["placement"] == {"device": "cpu", "dtype": "bfloat16"}

    adapter = tmp_path / "adapter"
    _invoke(["recover", model, "-r", RECIPE, "-m", "prompt:tokens=2", "--tokens", "64",
             "--train-seqlen", "16", "--calibration", str(corpus), "--no-latency",
             "--batch-tokens", "256",
             "--out", str(adapter), *where])  # fmt: skip
    record = json.loads((adapter / "knowcomp-recovery.json").read_text())
    assert record["placement"] == {"device": "cpu", "dtype": "bfloat16"}

    similar = tmp_path / "similarity.json"
    _invoke(["similarity", model, "--adapter", str(adapter), "--texts", str(corpus), "-n", "2",
             "--out", str(similar), *where])  # fmt: skip
    written = json.loads(similar.read_text())
    assert written["dtype"] == "bfloat16"
    assert written["recipe"].startswith(RECIPE)  # the recipe the adapter was trained after
    assert written["adapter"] == str(adapter) and written["layers"]


def test_calibration_and_block_lengths_have_their_own_names_in_specs(tmp_path):
    from knowcomp.errors import KnowcompError
    from knowcomp.study.trials import expand

    sweep = {"recipe": "prune:sparsegpt:overall:0.5", "recover": ["lora"]}
    base = {"name": "s", "models": ["m"], "output": str(tmp_path / "s.sqlite"), "recipes": [sweep]}

    def spec(**extra):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({**base, **extra}))
        return load_spec(path)

    plain = spec()
    newer = spec(recovery={"train_seqlen": 128})
    older = spec(recovery={"seqlen": 128})
    assert newer.recovery == older.recovery and newer.recovery.seqlen == 128
    keys = {t.key for t in expand(newer)}
    assert keys == {t.key for t in expand(older)}  # the old name keeps the trial keys
    with pytest.raises(KnowcompError, match="not both"):
        spec(recovery={"seqlen": 128, "train_seqlen": 128})

    calibrated = spec(calibration={"source": "data:boolq", "nsamples": 8,
                                   "calibration_seqlen": 64})  # fmt: skip
    assert (calibrated.calibration.nsamples, calibrated.calibration.seqlen) == (8, 64)
    before = {t.sweep: t.key for t in expand(plain) if t.recover is None}
    after = {t.sweep: t.key for t in expand(calibrated) if t.recover is None}
    assert before["baseline"] == after["baseline"]  # nothing calibrated in a baseline
    assert len(set(before.values()) & set(after.values())) == 1  # compressed trials changed
    assert plain.spec_hash() != calibrated.spec_hash()
    with pytest.raises(KnowcompError, match="calibration_seqlen"):
        spec(calibration={"calibration_seqlen": 1})
    with pytest.raises(KnowcompError, match="unknown calibration key"):
        spec(calibration={"seqlen": 64})


def test_a_study_calibrates_with_its_spec_text(tmp_path, word_tiny):
    """The spec's calibration settings reach the compression of a study's trials."""
    from knowcomp.study.spec import CalibrationSettings
    from knowcomp.study.worker import ModelWorker

    corpus = write_corpus(tmp_path / "corpus.txt")
    worker = ModelWorker(str(word_tiny), calibration=CalibrationSettings(str(corpus), 3, 16))
    compressed = worker.pipeline.compress("prune:sparsegpt:overall:0.5", seed=0)
    used = compressed.report.calibration
    assert (used["source"], used["nsamples"], used["seqlen"]) == (str(corpus), 3, 16)
