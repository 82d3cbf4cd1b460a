"""The input rule (BOS convention) through every door: specs, trial keys, stored results,
reports, `knowcomp eval`, and calibration text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.compress.calibration import Calibration, CalibrationSpec, build_calibration
from knowcomp.report.build import _notes
from knowcomp.report.frame import load_frame
from knowcomp.store import TrialOutcome
from knowcomp.study import ResultsStore, expand, run_study
from knowcomp.study.spec import SpecError, spec_from_dict
from tests.conftest import save_tiny_llama
from tests.test_lama import SHARED_DATA
from tests.tokenizer_matrix import build

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")


@pytest.fixture(scope="module")
def bos_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama saved with a tokenizer that adds `<s>` first (Llama 2 style)."""
    folder = tmp_path_factory.mktemp("tiny-llama-bos")
    tokenizer = build("llama2")
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    save_tiny_llama(folder, tokenizer, max_position_embeddings=512, **ids)
    return folder


def _spec(model: Path, out: Path, **extra) -> dict:
    return {"name": "bos", "models": [str(model)], "probes": ["piqa"], "limit": 2,
            "output": str(out), "recipes": [], **extra}  # fmt: skip


def test_add_bos_in_specs_and_trial_keys(tmp_path):
    auto = spec_from_dict(_spec(tmp_path, tmp_path / "r.sqlite"))
    forced = spec_from_dict(_spec(tmp_path, tmp_path / "r.sqlite", add_bos=False))
    assert (auto.add_bos, forced.add_bos) == ("auto", "false")  # YAML false reads as "false"
    (plain,), (no_bos,) = expand(auto), expand(forced)
    assert plain.key != no_bos.key  # a different input rule is a different result
    assert auto.spec_hash() != forced.spec_hash()
    # the default leaves the keys that results stored before it have
    before = {"model": str(tmp_path), "recipe": None, "seed": 0, "limit": 2,
              "lama_mode": "next-token", "dtype": "float32"}  # fmt: skip
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:20]
    assert plain.key == digest
    with pytest.raises(SpecError, match="add_bos must be auto, true or false; got 'sometimes'"):
        spec_from_dict(_spec(tmp_path, tmp_path / "r.sqlite", add_bos="sometimes"))


@needs_data
def test_studies_record_the_input_rule_and_reports_mark_old_results(tmp_path, bos_model_dir):
    db = tmp_path / "r.sqlite"
    run_study(spec_from_dict(_spec(bos_model_dir, db)))
    run_study(spec_from_dict(_spec(bos_model_dir, db, add_bos="false")))
    with ResultsStore(db) as store:
        rules = sorted(r["versions"]["knowcomp input rule"] for r in store.rows())
        scores = {r["trial_key"]: r["metrics"]["acc"] for r in store.rows()}
        # an old trial: stored by a knowcomp that wrote no input rule
        store.write(TrialOutcome(
            {"trial_key": "old", "study": "s", "spec_hash": "h", "model": "m",
             "sweep": "baseline", "seed": 0, "lama_mode": "next-token", "dtype": "float32",
             "versions": {"torch": torch.__version__}},
            [{"probe": "piqa", "category": "c", "metrics": {"acc": 0.5}, "counts": {}}],
        ))  # fmt: skip
        frame = load_frame(store)
    assert rules == ["2 (BOS first, add_bos auto)", "2 (BOS none, add_bos false)"]
    assert len(scores) == 2
    assert frame.old_input_rule == {"old"}
    (note,) = [n for n in _notes(frame) if "old input rule" in n]
    assert note.startswith("1 trial(s) were scored under knowcomp's old input rule")


@needs_data
def test_eval_add_bos_is_recorded_and_changes_the_scores(tmp_path, bos_model_dir):
    runner = CliRunner()
    out = {}
    for setting in ("auto", "false"):
        path = tmp_path / f"{setting}.json"
        result = runner.invoke(cli, ["eval", str(bos_model_dir), "--probes", "piqa", "--limit",
                                     "3", "--add-bos", setting, "--out", str(path)])  # fmt: skip
        assert result.exit_code == 0, result.output
        out[setting] = json.loads(path.read_text())
    options = {s: o["results"][0]["options"] for s, o in out.items()}
    assert options["auto"]["add_bos"] is True and options["false"]["add_bos"] is False
    assert options["false"]["bos_setting"] == "false" and options["auto"]["input_rule"] == 2
    lls = {s: [r["loglikelihoods"] for r in o["results"][0]["records"]] for s, o in out.items()}
    assert lls["auto"] != lls["false"]
    bad = runner.invoke(cli, ["eval", str(bos_model_dir), "--probes", "piqa", "--add-bos", "x"])
    assert bad.exit_code == 2 and "'x' is not one of 'auto', 'true', 'false'" in bad.output


def test_calibration_documents_start_with_bos_where_the_tokenizer_adds_one(tmp_path):
    text = tmp_path / "cal.txt"
    text.write_text("The capital of France is Paris.\n\nThe Nile is a river in Africa.\n")
    spec = CalibrationSpec(str(text), nsamples=1, seqlen=8, seed=0)
    for convention, first in (("llama2", True), ("gpt2", False)):
        tokenizer = build(convention)
        calibration: Calibration = build_calibration(tokenizer, spec)
        ids = calibration.tokens[0].tolist()
        assert (ids[0] == tokenizer.bos_token_id) is first, convention
        if first:  # every document: BOS, its text, end-of-text
            assert ids.count(tokenizer.bos_token_id) >= 1


def test_plain_token_ids_are_the_tokenizers_own_and_remembered():
    from knowcomp.probes.inputs import _known_ids, input_rule

    tokenizer = build("gpt2")
    rule = input_rule(tokenizer)
    texts = ["The capital of France is", " Paris", "", "naïve café"]
    for text in texts:
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert rule.plain(text) == expected
        ids = rule.plain(text)
        ids.append(-1)  # a caller's copy: changing it changes nothing remembered
        assert rule.plain(text) == expected
    assert set(_known_ids(tokenizer)) == set(texts)
