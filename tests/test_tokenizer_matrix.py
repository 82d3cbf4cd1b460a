"""Every tokenizer convention against lm-evaluation-harness's own scoring and generation.

For each convention of `tokenizer_matrix` (no BOS; BOS added by default, sentencepiece-style
and byte-level; a prefix space; BOS equal to EOS) a tiny random Llama with that vocabulary is
scored by knowcomp's probes and by lm-eval's `HFLM` on the very same model object:

- every built-in log-likelihood task (PIQA, ARC-Easy, WinoGrande, HellaSwag, BoolQ, SciQ,
  LAMBADA) item by item: each choice's log-likelihood within 1e-4 (1e-6 relative for the
  longest continuations) and the same picks;
- edge pairs (an empty context, trailing spaces and newlines, text that starts with the BOS
  token's own text);
- open-answer generation (TriviaQA prompts, lm-eval's stops): the same answers;
- LAMA's next-token mode against a plain forward over lm-eval's encoding of the context.

The models are random, with a large init so that picks and greedy tokens are not near ties.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from knowcomp.errors import KnowcompError
from knowcomp.models import Family
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import engine
from knowcomp.probes.base import RunOptions
from knowcomp.probes.inputs import INPUT_RULE, adds_bos, input_rule
from knowcomp.probes.lama.cloze import ClozeBuilder
from knowcomp.probes.lama.items import SLOT, ClozeItem
from knowcomp.probes.mc.requests import score_pairs
from knowcomp.probes.qa.probes import TRIVIAQA_STOPS
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take
from tests.test_lama import SHARED_DATA
from tests.tokenizer_matrix import ADDS_BOS, CONVENTIONS, build

needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed"
)
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")

CHOICE_TASKS = {"piqa": 4, "arc-easy": 4, "winogrande": 4, "hellaswag": 2, "boolq": 2,
                "sciq": 2}  # fmt: skip
LAMBADA = 4
TOLERANCE = 1e-4  # nats; and RELATIVE for long continuations, where lm-eval's float32 sum of
RELATIVE = 1e-6  # per-token log-probabilities (~7 nats each here) is the limit
EDGE_PAIRS = [
    ("", "The capital"),
    ("", " Paris"),
    ("Question: Which tool is best?\nAnswer:", " scissors"),
    ("Answer: ", "scissors"),
    ("It was a dark night\n\n", "The ship"),
    ("Born in 1879,", " Albert Einstein développa"),
]


def tiny_decoder(convention: str, seed: int = 0) -> LoadedModel:
    tokenizer = build(convention)
    config = AutoConfig.for_model(
        "llama", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, vocab_size=len(tokenizer),
        max_position_embeddings=384, initializer_range=0.2, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    return LoadedModel(model, tokenizer, Family.DECODER, f"tiny-{convention}", "config")


def lm_eval_of(loaded: LoadedModel, add_bos: str = "auto"):
    """lm-eval's HFLM on the model object (`auto`: lm-eval's default; else its add_bos_token)."""
    from knowcomp.probes.lmeval_bridge import hflm

    return hflm(loaded, batch_size=4, add_bos=add_bos)


def lm_eval_loglikelihoods(lm, pairs) -> list[tuple[float, bool]]:
    from lm_eval.api.instance import Instance

    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    return lm.loglikelihood(requests, disable_tqdm=True)


@pytest.fixture(scope="module", params=CONVENTIONS)
def convention(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pair(convention):
    loaded = tiny_decoder(convention)
    return loaded, lm_eval_of(loaded)


def test_the_rule_finds_each_tokenizers_bos_convention(convention):
    tokenizer = build(convention)
    assert adds_bos(tokenizer) is ADDS_BOS[convention]
    rule = input_rule(tokenizer)
    assert rule.add_bos is ADDS_BOS[convention]
    assert rule.record() == {"input_rule": INPUT_RULE, "add_bos": ADDS_BOS[convention],
                             "bos_setting": "auto"}  # fmt: skip
    text = "The capital of France is Paris."
    assert rule.encode(text) == list(tokenizer(text)["input_ids"])  # the tokenizer's default
    assert input_rule(tokenizer, "false").encode(text) == rule.plain(text)
    assert input_rule(tokenizer, "true").encode(text)[0] == tokenizer.bos_token_id
    # text that already starts with the BOS token's text gets no second one
    assert input_rule(tokenizer, "true").encode(f"{tokenizer.bos_token}{text}").count(
        tokenizer.bos_token_id
    ) == 1 + rule.plain(text).count(tokenizer.bos_token_id)


def test_bad_bos_settings_are_one_line_errors():
    with pytest.raises(KnowcompError, match="add_bos must be auto, true or false; got 'maybe'"):
        input_rule(build("gpt2"), "maybe")
    no_bos = copy.deepcopy(build("gpt2"))
    no_bos.bos_token = None
    with pytest.raises(KnowcompError, match="add_bos is true, but this tokenizer has no BOS"):
        input_rule(no_bos, "true")
    assert not input_rule(no_bos).add_bos
    tokenizer = build("llama2")
    assert input_rule(tokenizer, "yes").add_bos and not input_rule(tokenizer, "no").add_bos


@needs_lm_eval
def test_edge_pairs_score_as_lm_eval_does(pair):
    loaded, lm = pair
    ours = score_pairs(loaded, EDGE_PAIRS)
    theirs = lm_eval_loglikelihoods(lm, EDGE_PAIRS)
    for (context, cont), mine, (ll, greedy) in zip(EDGE_PAIRS, ours, theirs, strict=True):
        where = f"{loaded.spec} {context!r} + {cont!r}: knowcomp {mine.total}, lm-eval {ll}"
        assert mine.total == pytest.approx(ll, abs=TOLERANCE), where
        assert mine.greedy == greedy, where


@pytest.mark.integration
@needs_lm_eval
@needs_data
@pytest.mark.parametrize("probe", list(CHOICE_TASKS))
def test_choice_tasks_score_as_lm_eval_does(probe, pair):
    loaded, lm = pair
    n = CHOICE_TASKS[probe]
    items = take(get_probe(probe).items(RunOptions())[0], n, 0)
    result = get_probe(probe).run(loaded, RunOptions(limit=n, seed=0))
    assert result.options["add_bos"] is ADDS_BOS[loaded.spec.removeprefix("tiny-")]
    flat = [p for item in items for p in item.pairs]
    theirs = iter(lm_eval_loglikelihoods(lm, flat))
    for item, record in zip(items, result.records, strict=True):
        lls = [next(theirs)[0] for _ in item.pairs]
        where = f"{loaded.spec} {probe} item {item.index}: {record['loglikelihoods']} vs {lls}"
        assert record["loglikelihoods"] == pytest.approx(lls, abs=TOLERANCE, rel=RELATIVE), where
        assert record["chosen"] == max(range(len(lls)), key=lls.__getitem__), where


@pytest.mark.integration
@needs_lm_eval
@needs_data
def test_lambada_scores_as_lm_eval_does(pair):
    loaded, lm = pair
    probe = get_probe("lambada")
    chosen = take(probe._items(RunOptions())[0], LAMBADA, 0)
    result = probe.run(loaded, RunOptions(limit=LAMBADA, seed=0))
    theirs = lm_eval_loglikelihoods(lm, [(r.context, " " + r.continuation) for _, r in chosen])
    for record, (ll, greedy) in zip(result.records, theirs, strict=True):
        assert record["loglikelihood"] == pytest.approx(ll, abs=TOLERANCE)
        assert record["greedy"] == greedy


@pytest.mark.integration
@needs_lm_eval
@needs_data
def test_generation_answers_are_lm_evals(pair):
    from lm_eval.api.instance import Instance

    loaded, lm = pair
    probe = get_probe("triviaqa")
    items = take(probe.items(RunOptions())[0], 4, 0)
    result = probe.run(loaded, RunOptions(limit=4, seed=0, max_new_tokens=8))
    args = {"until": list(TRIVIAQA_STOPS), "max_gen_toks": 8, "do_sample": False}
    requests = [Instance("generate_until", {}, (it.prompt, args), i) for i, it in enumerate(items)]
    answers = lm.generate_until(requests, disable_tqdm=True)
    for record, answer in zip(result.records, answers, strict=True):
        assert record["prediction"] == answer.strip(), f"{loaded.spec}: {record} vs {answer!r}"


CLOZES = [
    ClozeItem("P36", "a", "France", "Paris", "The capital of France is [Y] ."),
    ClozeItem("P36", "b", "Italy", "Rome", "The capital of Italy is [Y] ."),
    ClozeItem("P19", "c", "Albert Einstein", "Germany", "Albert Einstein was born in [Y] ."),
    ClozeItem("P30", "d", "the Nile", "Africa", "the Nile is a river in [Y] ."),
    ClozeItem("P1", "e", "Italy", "Rome", "[Y] is the capital of Italy ."),
]


def lm_eval_rank(lm, model, context: str, obj: str) -> int:
    """The object's rank after `context`, from a plain forward over lm-eval's encoding."""
    if context:
        ids, target = lm._encode_pair(context, f" {obj}")
    else:  # lm-eval's empty context: the prefix token, the continuation on its own
        ids, target = [lm.prefix_token_id], lm.tok_encode(obj, add_special_tokens=False)
    assert len(target) == 1
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return 1 + int((logits > logits[target[0]]).sum())


@needs_lm_eval
def test_lama_next_token_is_a_plain_forward_on_lm_evals_encoding(pair):
    loaded, lm = pair
    builder = ClozeBuilder(loaded.tokenizer, loaded.family, loaded.spec)
    requests = [builder.build(item) for item in CLOZES]
    assert all(not isinstance(r, str) for r in requests), requests
    scored = engine.score(loaded.model, loaded.family, requests, pad_id=0)
    for item, result in zip(CLOZES, scored, strict=True):
        context = item.text.split(SLOT)[0].rstrip()
        assert result.first_rank == lm_eval_rank(lm, loaded.model, context, item.obj), item


@pytest.mark.integration
@needs_lm_eval
@needs_data
def test_lama_probe_ranks_are_lm_evals(pair):
    from knowcomp.probes.lama.items import trex

    loaded, lm = pair
    result = get_probe("lama-trex").run(loaded, RunOptions(limit=2, seed=0))
    ranked = {r["uuid"]: r["rank"] for r in result.records if "rank" in r}
    items = [i for rel in trex(None, False).values() for i in take(rel, 2, 0) if i.uuid in ranked]
    assert items, "no single-token objects: the check would be empty"
    for item in items:
        context = item.text.split(SLOT)[0].rstrip()
        assert ranked[item.uuid] == lm_eval_rank(lm, loaded.model, context, item.obj), item


@needs_lm_eval
@needs_data
@pytest.mark.parametrize("convention", ["llama2", "llama3"])
def test_add_bos_false_scores_as_lm_eval_without_bos(convention):
    loaded = tiny_decoder(convention)
    lm = lm_eval_of(loaded, add_bos="false")
    assert lm.add_bos_token is False
    ours = score_pairs(loaded, EDGE_PAIRS[2:], rule=input_rule(loaded.tokenizer, "false"))
    theirs = lm_eval_loglikelihoods(lm, EDGE_PAIRS[2:])
    assert [s.total for s in ours] == pytest.approx([ll for ll, _ in theirs], abs=TOLERANCE)
    with_bos = score_pairs(loaded, EDGE_PAIRS[2:])
    assert any(abs(a.total - b.total) > 1e-3 for a, b in zip(ours, with_bos, strict=True))
    result = get_probe("piqa").run(loaded, RunOptions(limit=2, add_bos="false"))
    assert result.options["add_bos"] is False and result.options["bos_setting"] == "false"
