"""The command line: tables, saved output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.models import load_model
from tests.test_models import _save_tiny_with_tokenizer


@pytest.fixture
def tiny_folder(tiny, tmp_path):
    folder = tmp_path / "tiny-llama"
    _save_tiny_with_tokenizer(tiny("llama"), folder)
    return folder


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_modules_table(tiny_folder):
    result = run("modules", str(tiny_folder))
    assert result.exit_code == 0, result.output
    for label in ("Overall", "Attention", "Feed-forward", "Final layer (tied)", "Total trainable"):
        assert label in result.output
    assert "model.layers.{0-1}.self_attn.{q_proj,k_proj,v_proj,o_proj}" in result.output


def test_modules_json(tiny_folder):
    result = run("modules", str(tiny_folder), "--json")
    payload = json.loads(result.output)
    groups = {g["group"]: g for g in payload["groups"]}
    assert payload["family"] == "decoder"
    assert groups["attention"]["layers"] == 8 and groups["feed_forward"]["layers"] == 6


def test_compress_saves_a_model_that_loads_back(tiny_folder, tmp_path):
    out = tmp_path / "out"
    result = run("compress", str(tiny_folder), "-r", "overall-gpq", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["groups"][0]["sparsity"] == pytest.approx(0.2, abs=1e-3)
    assert json.loads((out / "knowcomp.json").read_text())["report"] == report
    assert load_model(str(out)).family.value == "decoder"


def test_compress_table(tiny_folder):
    result = run("compress", str(tiny_folder), "-r", "prune:l1_unstructured:final_layer:0.3")
    assert result.exit_code == 0, result.output
    assert "30.00%" in result.output
    assert "untied" in result.output


def test_methods_lists_registry():
    result = run("methods")
    assert result.exit_code == 0
    for name in ("l1_unstructured", "ln_structured", "nm", "dynamic_int8", "weight_only"):
        assert name in result.output


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("prune:l1_unstructured:cross_attention:0.2", "module group 'cross_attention' is empty"),
        ("prune:magic:overall:0.2", "unknown compression method 'magic'"),
        ("prune:l1_unstructured:everything:0.2", "unknown module group 'everything'"),
        ("prune:l1_unstructured:overall:1.2", "level must be a fraction"),
        ("quant:dynamic_int8:overall,prune:l1_unstructured:overall:0.2", "prune first"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_folder, recipe, message):
    result = run("compress", str(tiny_folder), "-r", recipe)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_missing_model_path_exit_2():
    result = run("modules", "./missing-model")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: model path './missing-model' does not exist; check the path, or pass a "
        "Hugging Face id or a short name (smollm2-135m, minilm-l6)"
    )


def test_out_dir_not_empty_refused(tiny_folder, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = run(
        "compress", str(tiny_folder), "-r", "overall-gpq", "--out", str(tmp_path / "taken")
    )
    assert result.exit_code == 2 and "not empty" in result.output


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_eval_prints_table_and_writes_json(tiny_folder, tmp_path):
    out = tmp_path / "results.json"
    result = run("eval", str(tiny_folder), "--probes", "lama-squad", "--limit", "5",
                 "--data-dir", str(SHARED_DATA), "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "lama-squad" in result.output and "P@1 macro" in result.output
    payload = json.loads(out.read_text())
    (probe,) = payload["results"]
    assert probe["counts"]["facts"] == 5 and len(probe["records"]) == 5


def test_eval_unknown_probe_fails_before_loading(tiny_folder):
    result = run("eval", str(tiny_folder), "--probes", "lama-trex,nope")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown probe 'nope'")


def test_eval_missing_dataset_is_named(tiny_folder, tmp_path):
    result = run("eval", str(tiny_folder), "--probes", "lama-trex", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "dataset 'lama-trex' is missing" in result.output


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_interrupted_eval_keeps_finished_probes(tiny_folder, tmp_path, monkeypatch):
    from knowcomp.probes.lama.probes import LamaConceptNetSubset

    def interrupt(self, loaded, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(LamaConceptNetSubset, "run", interrupt)
    out = tmp_path / "results.json"
    result = run("eval", str(tiny_folder), "--probes", "lama-squad,lama-conceptnet-subset",
                 "--limit", "3", "--data-dir", str(SHARED_DATA), "--out", str(out))  # fmt: skip
    assert result.exit_code == 130
    payload = json.loads(out.read_text())
    assert payload["complete"] is False
    assert [r["probe"] for r in payload["results"]] == ["lama-squad"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "tiny-llama"]
