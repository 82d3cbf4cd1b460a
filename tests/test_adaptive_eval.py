"""Adaptive evaluation beyond plain local studies: `knowcomp eval --precision` (the same
measuring as a study's, against a lazily scored baseline), recover steps in an adaptive study
(the recovered model's drop against the baseline), adaptive studies on Ray, and the store
never trading a baseline for one that scored fewer items. Tiny random Llama with SmolLM2's
tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from knowcomp.analysis.items import aligned, item_values
from knowcomp.analysis.sequential import interval_path
from knowcomp.cli.main import cli
from knowcomp.models import load_model
from knowcomp.pipeline.adaptive import STOP_PRECISION
from knowcomp.store import ResultsStore, TrialOutcome
from knowcomp.study import run_study
from knowcomp.study.spec import SpecError, spec_from_dict
from knowcomp.study.trials import validate
from tests.conftest import save_tiny_llama
from tests.test_recovery import write_corpus

pytestmark = pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECIPE = "prune:l1_unstructured:overall:0.9"
METRIC = {"piqa": "acc", "lama-google-re": "p@1_micro"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, load_model("smollm2-135m").tokenizer, max_position_embeddings=512,
                    tie_word_embeddings=True)  # fmt: skip
    write_corpus(folder.parent / "corpus.txt")
    return folder


def _study(model: Path, out: Path, precision: float | None, **extra) -> dict:
    data = {"name": "adaptive", "models": [str(model)], "probes": ["piqa", "lama-google-re"],
            "limit": 100, "output": str(out), "data_dir": str(DATA),
            "recipes": [RECIPE]}  # fmt: skip
    if precision is not None:
        data["precision"] = precision
    return data | extra


def _results(out: Path) -> dict[tuple[str, str], dict]:
    with ResultsStore(out, readonly=True) as store:
        return {(t["sweep"] if not t.get("recovery") else t["recovery"]["label"], p):
                store.result(t["trial_key"], p)
                for t in store.trials() for p in store.done_probes(t["trial_key"])}  # fmt: skip


def _keys(result: dict) -> list:
    return list(item_values(result["records"], METRIC[result["probe"]]).keys)


def _drop_again(result: dict, baseline: dict) -> tuple[float, float, float]:
    """The drop's confidence sequence recomputed from the two results' records."""
    metric = METRIC[result["probe"]]
    pair = aligned(
        [item_values(result["records"], metric), item_values(baseline["records"], metric)]
    )
    estimate = interval_path(pair.rows[1] - pair.rows[0], result["sequential"]["checks"])[-1]
    return 100 * estimate.value, 100 * estimate.low, 100 * estimate.high


# -- knowcomp eval --precision ----------------------------------------------------------------
def test_eval_precision_stops_prints_and_matches_the_study(model_dir, tmp_path):
    out = tmp_path / "eval.json"
    args = ["eval", str(model_dir), "-p", "piqa,lama-google-re", "--limit", "100", "--recipe",
            RECIPE, "--precision", "30", "--data-dir", str(DATA), "--out", str(out)]  # fmt: skip
    shown = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "Drop against the uncompressed model (--precision 30)" in shown.output
    assert shown.output.count(STOP_PRECISION) == 2
    saved = json.loads(out.read_text())
    assert saved["precision"] == 30
    baselines = {b["probe"]: b for b in saved["baselines"]}
    for result in saved["results"]:
        seq, drop = result["sequential"], result["sequential"]["drop"]
        assert seq["stop"] == STOP_PRECISION and drop["high"] - drop["low"] <= 60
        assert drop["items"] < seq["pool"]
        assert f"{drop['items']} of {seq['pool']}" in shown.output
        assert f"{drop['value']:+.1f} [{drop['low']:+.1f}, {drop['high']:+.1f}]" in shown.output
        baseline = baselines[result["probe"]]
        assert set(_keys(result)) <= set(_keys(baseline))  # the baseline covers its items
        assert _drop_again(result, baseline) == pytest.approx(
            (drop["value"], drop["low"], drop["high"]), abs=1e-9)  # fmt: skip

    # one shared measuring: a one-trial study at the same precision gets the same drops
    run_study(spec_from_dict(_study(model_dir, tmp_path / "s.sqlite", 30)))
    stored = _results(tmp_path / "s.sqlite")
    for result in saved["results"]:
        assert (
            stored[(RECIPE, result["probe"])]["sequential"]["drop"] == result["sequential"]["drop"]
        )


def test_eval_precision_without_a_comparison_is_one_line_and_writes_nothing(model_dir, tmp_path):
    out = tmp_path / "never.json"
    base = ["eval", str(model_dir), "-p", "piqa", "--limit", "10", "--data-dir", str(DATA),
            "--out", str(out)]  # fmt: skip
    for extra, message in (
        (["--precision", "2"], "needs --recipe (or --adapter)"),
        (["--precision", "-1", "-r", RECIPE], "positive number of points"),
    ):
        result = CliRunner().invoke(cli, [*base, *extra])
        assert result.exit_code != 0
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists()


# -- recover steps ----------------------------------------------------------------------------
def _recovering(model: Path, out: Path, precision: float | None, **recovery) -> dict:
    settings = {"tokens": 256, "seqlen": 32, "batch_size": 4,
                "calibration": str(model.parent / "corpus.txt")} | recovery  # fmt: skip
    return _study(model, out, precision, probes=["piqa"],
                  recipes=[{"recipe": RECIPE, "recover": "prompt:tokens=2:lr=0.05"}],
                  recovery=settings)  # fmt: skip


def test_a_recovered_trial_is_measured_against_the_baseline_and_extended(model_dir, tmp_path):
    out = tmp_path / "r.sqlite"
    run_study(spec_from_dict(_recovering(model_dir, out, 30)))
    first = _results(out)
    recovered = first[("prompt:tokens=2:lr=0.05", "piqa")]
    baseline = first[("baseline", "piqa")]
    seq = recovered["sequential"]
    assert seq["stop"] == STOP_PRECISION and seq["drop"]["items"] < seq["pool"]
    assert set(_keys(recovered)) <= set(_keys(baseline))
    drop = seq["drop"]
    assert _drop_again(recovered, baseline) == pytest.approx(
        (drop["value"], drop["low"], drop["high"]), abs=1e-9)  # fmt: skip
    # the adapter was kept; `eval --adapter --precision` measures the same drop with it
    (folder,) = (tmp_path / "r-adapters").iterdir()
    saved = tmp_path / "eval.json"
    shown = CliRunner().invoke(cli, ["eval", str(model_dir), "-p", "piqa", "--limit", "100",
                                     "--adapter", str(folder), "--precision", "30", "--data-dir",
                                     str(DATA), "--out", str(saved)])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    (result,) = json.loads(saved.read_text())["results"]
    assert result["sequential"]["drop"] == drop
    # a tighter run extends the recovered trial with the kept adapter
    run_study(spec_from_dict(_recovering(model_dir, out, 8)))
    after = _results(out)[("prompt:tokens=2:lr=0.05", "piqa")]
    assert _keys(after)[: len(_keys(recovered))] == _keys(recovered)
    assert len(_keys(after)) > len(_keys(recovered))
    assert after["records"][: len(recovered["records"])] == recovered["records"]
    # the prompt was attached for every chunk, also those scored after the baseline was
    # extended (with the model restored and compressed again in between)
    compressed = {r["index"]: r for r in _results(out)[(RECIPE, "piqa")]["records"]}
    common = [r for r in after["records"] if r["index"] in compressed]
    assert len(common) > len(recovered["records"])
    assert all(r["loglikelihoods"] != compressed[r["index"]]["loglikelihoods"] for r in common)


def test_precision_with_recover_steps_needs_kept_adapters(model_dir, tmp_path):
    spec = spec_from_dict(_recovering(model_dir, tmp_path / "x.sqlite", 2, save_adapters=False))
    with pytest.raises(SpecError, match="keeps each trial's adapter"):
        validate(spec)
    assert not (tmp_path / "x.sqlite").exists()


# -- Ray ----------------------------------------------------------------------------------------
@pytest.fixture
def local_ray():
    """A Ray instance of this test's own (started in-process, shut down after: no `ray stop`,
    so other Ray clusters on the machine are left alone)."""
    ray = pytest.importorskip("ray")
    import tempfile

    temp = tempfile.mkdtemp(prefix="kc-ray-", dir="/tmp")  # Ray's socket paths must be short
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp)  # fmt: skip
    yield
    ray.shutdown()


@pytest.mark.integration
def test_an_adaptive_study_on_ray_stores_what_the_local_runner_does(model_dir, tmp_path, local_ray):
    recipes = [RECIPE, "prune:l1_unstructured:overall:0.5"]
    spec = spec_from_dict(_study(model_dir, tmp_path / "ray.sqlite", 30, recipes=recipes))
    run_study(spec, executor="ray", workers_per_model=1)  # one actor: the local order
    local = spec_from_dict(_study(model_dir, tmp_path / "local.sqlite", 30, recipes=recipes))
    run_study(local)
    on_ray, here = _results(spec.output), _results(local.output)
    assert on_ray.keys() == here.keys()
    for key, result in here.items():
        got = on_ray[key]
        assert got["sequential"]["share"] == result["sequential"]["share"]
        if result["sequential"]["drop"] is not None:
            assert got["sequential"]["drop"] == pytest.approx(result["sequential"]["drop"])
        assert got["metrics"] == pytest.approx(result["metrics"], abs=1e-9)
    # resumed on Ray: nothing left to do
    assert run_study(spec, executor="ray").ran == 0


# -- the store --------------------------------------------------------------------------------
def test_a_baseline_is_never_replaced_by_one_that_scored_fewer_items(tmp_path):
    def result(share: float, acc: float) -> dict:
        return {"probe": "piqa", "category": "c", "metrics": {"acc": acc}, "counts": {},
                "records": [{"index": 0, "acc": acc}],
                "sequential": {"precision": None, "share": share, "pool": 10}}  # fmt: skip

    trial = {"trial_key": "b", "study": "s", "spec_hash": "h", "model": "m",
             "sweep": "baseline", "seed": 0, "lama_mode": "next-token",
             "dtype": "float32"}  # fmt: skip
    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.write(
            TrialOutcome({**trial, "trial_key": "t"}, [], updates=[("b", result(0.6, 0.7))])
        )
        assert not store.has_trial("b")  # a baseline's results can come before its trial
        assert store.write(TrialOutcome(trial, [result(0.2, 0.5)])) == 0  # its first chunk
        assert store.has_trial("b")
        assert store.sequential("b", "piqa")["share"] == 0.6
        assert store.result("b", "piqa")["metrics"] == {"acc": 0.7}
        store.write(TrialOutcome(trial, [], updates=[("b", result(0.9, 0.8))]))  # further
        assert store.sequential("b", "piqa")["share"] == 0.9
