"""The dry run's training estimate of recover steps (`study.train_cost`): the steps a budget
implies are the steps training takes, a few steps are measured on the model and scaled by
them. Tiny random decoders with a word-level tokenizer and a corpus file; times depend on the
machine, so only the structure and the scaling are asserted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from knowcomp.cache.fingerprints import weights_hash
from knowcomp.cli.main import cli
from knowcomp.models import load_model
from knowcomp.recovery import TrainSettings, parse_method, recover
from knowcomp.study.cost import estimate_study
from knowcomp.study.runner import PendingTrial
from knowcomp.study.spec import spec_from_dict
from knowcomp.study.train_cost import (
    TrainingRate,
    estimate_training,
    implied_steps,
    measure_training,
)
from knowcomp.study.trials import validate
from tests.conftest import build_tiny
from tests.test_models import _save_tiny_with_tokenizer
from tests.test_recovery import write_corpus

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PRUNE = "prune:l1_unstructured:overall:0.5"
IDP_SPLIT = "idp:tokens=2+3+2:budget=split"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-cost")
    _save_tiny_with_tokenizer(build_tiny("llama"), root / "model")
    write_corpus(root / "corpus.txt", paragraphs=120)
    return root


def _train(folder: Path, tokens: int, batch_size: int = 4) -> TrainSettings:
    return TrainSettings(tokens=tokens, seqlen=16, batch_size=batch_size,
                         calibration=str(folder / "corpus.txt"))  # fmt: skip


@pytest.mark.parametrize(
    ("method", "tokens", "batch_size"),
    [("lora", 16 * 9, 4), ("prompt:tokens=2", 16 * 8, 4), ("idp:tokens=2+3", 16 * 5, 2),
     (IDP_SPLIT, 16 * 10, 2), (IDP_SPLIT, 16 * 7, 4)],
)  # fmt: skip
def test_implied_steps_are_the_steps_training_takes(folder, method, tokens, batch_size):
    loaded = load_model(str(folder / "model"))
    train = _train(folder, tokens, batch_size)
    settings = parse_method(method)
    adapter = recover(loaded, settings, train)
    assert implied_steps(settings, train) == adapter.info.log["steps"]


@pytest.mark.parametrize("method", ["lora", "prefix:tokens=2", IDP_SPLIT])
def test_measuring_trains_a_few_steps_per_run_and_leaves_the_weights(folder, method):
    loaded = load_model(str(folder / "model"))
    before = weights_hash(loaded.model)
    rate = measure_training(loaded, method, _train(folder, 16 * 64))
    runs = 3 if method == IDP_SPLIT else 1
    assert rate.measured_steps == 3 * runs and rate.seconds_per_step > 0 and rate.fixed >= 0
    assert weights_hash(loaded.model) == before


def test_the_estimate_scales_with_the_steps_the_budget_implies(folder):
    rate = TrainingRate("prompt:tokens=2", seconds_per_step=0.5, fixed=3.0, measured_steps=3)
    settings = parse_method("prompt:tokens=2")
    small = estimate_training(rate, settings, _train(folder, 16 * 8))  # 2 steps of 4 blocks
    large = estimate_training(rate, settings, _train(folder, 16 * 40))  # 10 steps
    assert (small.steps, large.steps) == (2, 10)
    assert large.seconds - rate.fixed == pytest.approx(5 * (small.seconds - rate.fixed))
    slower = estimate_training(rate, settings, _train(folder, 16 * 40), factor=2.0)
    assert slower.seconds - rate.fixed == pytest.approx(2 * (large.seconds - rate.fixed))
    idp = parse_method("idp:tokens=2+3")  # budget=each: every prompt trains on all of it
    assert estimate_training(rate, idp, _train(folder, 16 * 8)).steps == 2 * 2


def _spec(folder: Path, out: Path, tokens: int, **extra) -> dict:
    return {"name": "tiny-recover", "models": [str(folder / "model")], "probes": ["piqa"],
            "limit": 2, "output": str(out), "data_dir": str(SHARED_DATA),
            "recipes": [{"name": "prune", "recipe": PRUNE, "recover": ["lora", IDP_SPLIT]}],
            "recovery": {"tokens": tokens, "seqlen": 16, "batch_size": 2,
                         "calibration": str(folder / "corpus.txt")}, **extra}  # fmt: skip


@pytest.mark.integration
def test_dry_run_estimates_each_recovered_trials_training(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", "off")
    spec = spec_from_dict(_spec(folder, tmp_path / "r.sqlite", tokens=16 * 12))
    trials = validate(spec)
    estimate = estimate_study(spec, [PendingTrial(t, list(spec.probes)) for t in trials])
    by_method = {t.trial.recover: t for t in estimate.trials}
    assert by_method[None].training is None  # the compressed trial trains nothing
    lora, idp = by_method["lora"].training, by_method[IDP_SPLIT].training
    assert (lora.steps, idp.steps) == (6, 6)  # 12 blocks of 2; IDP: 3 shares of 4 blocks
    for t in (by_method["lora"], by_method[IDP_SPLIT]):
        assert t.seconds > t.training.seconds > 0  # the probes' time and the training's
    assert any("training is timed" in note for note in estimate.notes)
    assert not any("not estimated" in note for note in estimate.notes)

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_spec(folder, tmp_path / "r.sqlite", tokens=16 * 12)))
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Training" in result.output and "6 steps" in result.output


@pytest.mark.integration
def test_a_saved_adapter_is_estimated_as_loaded_not_trained(folder, tmp_path, monkeypatch):
    from knowcomp.study import run_study

    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", "off")
    spec = spec_from_dict(_spec(folder, tmp_path / "r.sqlite", tokens=16 * 4,
                                recipes=[{"name": "prune", "recipe": PRUNE,
                                          "recover": ["prompt:tokens=2"]}]))  # fmt: skip
    run_study(spec)  # saves the adapter next to the results
    spec.output.unlink()  # the results are gone, the adapter is kept
    assert spec.adapters_folder().is_dir()
    trials = validate(spec)
    estimate = estimate_study(spec, [PendingTrial(t, list(spec.probes)) for t in trials])
    recovered = next(t for t in estimate.trials if t.trial.recover)
    assert recovered.training.steps == 0 and "saved adapter" in recovered.training.how
