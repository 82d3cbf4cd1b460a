"""What a study will cost (`study.cost`, `knowcomp run --dry-run`): real measurements on a tiny
real model; the figures' values depend on the machine, so only their structure is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from knowcomp.cache.fingerprints import weights_hash
from knowcomp.cli.main import cli
from knowcomp.models import load_model
from knowcomp.probes.base import RunOptions
from knowcomp.probes.registry import get_probe
from knowcomp.store import ResultsStore
from knowcomp.study import run_study
from knowcomp.study.cost import estimate_study, measure_sweep
from knowcomp.study.runner import PendingTrial
from knowcomp.study.spec import spec_from_dict
from knowcomp.study.trials import validate
from tests.conftest import save_tiny_llama

pytestmark = pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer

DATA = Path(__file__).parent.parent.parent / "shared" / "data"
SPARSEGPT = "prune:sparsegpt:overall:0.5"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, load_model("smollm2-135m").tokenizer, max_position_embeddings=512,
                    tie_word_embeddings=True)  # fmt: skip
    return folder


def _spec(model: Path, out: Path) -> dict:
    return {"name": "costed", "models": [str(model)], "probes": ["lama-conceptnet-subset", "piqa"],
            "limit": 3, "output": str(out), "data_dir": str(DATA),
            "recipes": [{"name": "prune", "recipe": "prune:l1_unstructured:overall:{level}",
                         "levels": [0.3, 0.6]}, "quant:dynamic_int8:feed_forward"]}  # fmt: skip


def test_estimate_measures_every_trial_and_stores_small_baselines(tmp_path, model_dir,
                                                                  monkeypatch):  # fmt: skip
    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", str(tmp_path / "cache"))
    spec = spec_from_dict(_spec(model_dir, tmp_path / "r.sqlite"))
    trials = validate(spec)
    estimate = estimate_study(spec, [PendingTrial(t, list(spec.probes)) for t in trials])
    assert [t.trial for t in estimate.trials] == trials
    counts = {p: get_probe(p).count(RunOptions(limit=3, data_dir=DATA)) for p in spec.probes}
    for t in estimate.trials:
        assert t.items == sum(counts.values())
        assert t.tokens > t.items and t.seconds > 0 and t.reuse is None
    baseline, *compressed = estimate.trials
    # piqa at 3 items ran at the study's size (and was stored); ConceptNet's 13 relations x 3
    # were sampled at 1 and 2 per relation
    assert baseline.cached == ["piqa"]
    assert all(not t.cached for t in compressed)
    assert estimate.seconds > sum(t.seconds for t in estimate.trials)  # loading counted
    # The study reuses the baseline the dry run stored.
    run_study(spec)
    with ResultsStore(spec.output) as store:
        notes = {(r["recipe"], r["probe"]): r["notes"] for r in store.rows()}
    assert any("baseline cache" in n for n in notes[(None, "piqa")])
    assert not any("baseline cache" in n for n in notes[(None, "lama-conceptnet-subset")])


def test_a_calibrated_recipe_is_timed_on_its_first_block_and_restored(model_dir):
    from knowcomp.compress.calibration import CalibrationSpec
    from knowcomp.pipeline import Pipeline
    from knowcomp.recovery.latency import latency_batch

    spec = spec_from_dict({**_spec(model_dir, Path("unused.sqlite")), "recipes": [SPARSEGPT]})
    trial = validate(spec)[1]
    calibration = CalibrationSpec(nsamples=2, seqlen=32, data_dir=str(DATA))
    worker = Pipeline(str(model_dir), data_dir=DATA, calibration=calibration)
    before = weights_hash(worker.loaded.model)
    batch = latency_batch(worker.loaded.model.config.vocab_size, batch=1, tokens=8)
    sweep = measure_sweep(worker, trial, batch, 1.0, "cpu")
    assert sweep.how == "scaled from 8 of 14 layers" and sweep.compress_seconds > 0
    assert weights_hash(worker.loaded.model) == before  # restored exactly


def test_dry_run_prints_the_estimate_and_skips_stored_trials(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", "off")
    data = _spec(model_dir, tmp_path / "r.sqlite")
    data["recipes"] = ["quant:dynamic_int8:feed_forward"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "estimated cost per trial" in result.output and "total: 2 trial(s)" in result.output
    assert "cached baseline" not in result.output  # the cache is off
    assert not (tmp_path / "r.sqlite").exists()  # a dry run writes no results file
    listed = CliRunner().invoke(cli, ["run", str(path), "--dry-run", "--no-estimate"])
    assert "quant:dynamic_int8:feed_forward" in listed.output and "total" not in listed.output
