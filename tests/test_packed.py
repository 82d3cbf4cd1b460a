"""Packed scoring (a context and all its continuations in one row) against brute force: a full
forward of each (context, continuation) alone, on tiny random decoders of several families."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from knowcomp.models.family import Family
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import engine, packed
from knowcomp.probes.mc.requests import score_pairs
from tests.test_lama import argmax_rank

DECODERS = ["llama", "gpt2", "opt", "qwen2", "gpt_neox"]
TOLERANCE = 1e-5  # nats; float32 rounding between batch shapes is ~1e-6 here


def _random_groups(seed: int) -> list[tuple[tuple[int, ...], list[tuple[int, ...]]]]:
    """Contexts of 1-12 tokens with 1-4 continuations of 1-6 tokens: uneven rows, one-token
    continuations (nothing packed after the context) and several rows per batch."""
    gen = torch.Generator().manual_seed(seed)

    def tokens(low: int, high: int) -> tuple[int, ...]:
        n = int(torch.randint(low, high + 1, (1,), generator=gen))
        return tuple(torch.randint(3, 120, (n,), generator=gen).tolist())

    sizes = torch.randint(1, 5, (7,), generator=gen).tolist()
    return [(tokens(1, 12), [tokens(1, 6) for _ in range(k)]) for k in sizes]


def _alone(model, context, continuation) -> tuple[list[float], bool, int, int]:
    """Brute force: one unpadded forward of context + continuation, full head everywhere."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + continuation])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    at = range(len(context) - 1, len(context) + len(continuation) - 1)
    first = logits[len(context) - 1]
    return (
        [float(logprobs[p, t]) for p, t in zip(at, continuation, strict=True)],
        all(int(logits[p].argmax()) == t for p, t in zip(at, continuation, strict=True)),
        argmax_rank(first, continuation[0]),
        int(first.argmax()),
    )


@pytest.mark.parametrize("model_type", DECODERS)
@pytest.mark.parametrize("max_tokens", [24, 4096])  # 24: rows split, many padded batches
def test_packed_equals_brute_force(tiny, model_type, max_tokens):
    loaded = tiny(model_type)
    assert packed.supports_packing(loaded.model, loaded.family)
    groups = _random_groups(seed=len(model_type))
    results = packed.score_packed(loaded.model, groups, pad_id=0, max_length=1024,
                                  max_tokens=max_tokens)  # fmt: skip
    for (context, continuations), scored in zip(groups, results, strict=True):
        for continuation, result in zip(continuations, scored, strict=True):
            logprobs, greedy, rank, top = _alone(loaded.model, context, continuation)
            assert result.logprobs == pytest.approx(logprobs, abs=TOLERANCE)
            assert (result.greedy, result.first_rank, result.first_top) == (greedy, rank, top)


def test_rows_split_at_the_cap_and_keep_at_least_one_continuation():
    groups = [((1, 2, 3), [(4, 5, 6), (7,), (8, 9)]), ((1,), [(2, 3, 4, 5, 6, 7)])]
    rows = packed.rows(groups, cap=5)
    # 3 context tokens + 2 + 0 fit in 5; (8, 9) would make 6. A 6-token row exceeds the cap
    # on its own and still gets its row.
    assert rows == [packed.Row(0, (0, 1), 5), packed.Row(0, (2,), 4), packed.Row(1, (0,), 6)]


def test_attention_bias_sees_the_context_and_its_own_continuation_only():
    segments = torch.tensor([[0, 0, 1, 1, 2, -1]])  # context, choice 1, choice 2, padding
    bias = packed.attention_bias(segments, torch.bfloat16)
    assert bias.shape == (1, 1, 6, 6) and bias.dtype == torch.bfloat16
    seen = (bias[0, 0] == 0).int().tolist()
    assert seen == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # choice 2 never sees choice 1
        [1, 1, 0, 0, 0, 1],  # padding sees the context and itself
    ]
    assert bias.min() == torch.finfo(torch.bfloat16).min  # not -inf: no NaN rows


def test_half_precision_model_gets_a_mask_of_its_dtype(tiny):
    loaded = tiny("llama")
    model = loaded.model.to(torch.bfloat16)
    groups = _random_groups(seed=3)
    results = packed.score_packed(model, groups, pad_id=0, max_length=1024, max_tokens=64)
    for (context, continuations), scored in zip(groups, results, strict=True):
        for continuation, result in zip(continuations, scored, strict=True):
            logprobs = _alone(model, context, continuation)[0]
            assert result.logprobs == pytest.approx(logprobs, abs=0.05)  # bfloat16 rounding


class CharTokenizer:
    """One token per character: enough for the pair split, and lengths easy to reason about."""

    eos_token_id = bos_token_id = pad_token_id = 1

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [3 + ord(c) % 100 for c in text]}


def _with_chars(model_type: str, **config) -> LoadedModel:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(model_type, vocab_size=120, **config)
    ).eval()
    return LoadedModel(model, CharTokenizer(), Family.DECODER, f"tiny-{model_type}", "config")


LLAMA = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, intermediate_size=64)  # fmt: skip


def _check_pairs_against_lm_eval_truncation(loaded: LoadedModel, pairs, window: int) -> None:
    """score_pairs against brute force on lm-eval's input: `(ctx + cont)[-(window + 1):][:-1]`,
    the continuation's tokens scored at the end."""
    tok = loaded.tokenizer
    scored = score_pairs(loaded, pairs, max_tokens=32)
    for (context, continuation), result in zip(pairs, scored, strict=True):
        ctx, cont = tok(context)["input_ids"], tok(continuation)["input_ids"]
        inputs = (ctx + cont)[-(window + 1) :][:-1]
        with torch.no_grad():
            logits = loaded.model(input_ids=torch.tensor([inputs])).logits[0]
        logprobs = torch.log_softmax(logits, dim=-1)
        at = range(len(inputs) - len(cont), len(inputs))
        expected = [float(logprobs[p, t]) for p, t in zip(at, cont, strict=True)]
        assert result.logprobs == pytest.approx(expected, abs=TOLERANCE), (context, continuation)


PAIRS = [
    ("Q: short?", " yes"),  # fits with room to spare
    ("Q: short?", " no, it is not"),
    ("Q: short?", " maybe"),  # the three do not fit one 16-token row: split into two rows
    ("A much longer question that overflows", " first"),  # left-truncated, differently
    ("A much longer question that overflows", " second choice"),  # for each choice
    ("xy", " exactly sixteen"),  # a whole-window choice: one context token is left
]


def test_score_pairs_packs_and_truncates_as_lm_eval(monkeypatch):
    loaded = _with_chars("llama", max_position_embeddings=16, **LLAMA)
    assert packed.supports_packing(loaded.model, loaded.family)  # checked once, remembered
    for unpacked in ("score", "score_shared_context"):  # every pair must go packed
        monkeypatch.setattr(engine, unpacked, lambda *_a, **_k: pytest.fail("not packed"))
    _check_pairs_against_lm_eval_truncation(loaded, PAIRS, window=16)


def test_sliding_window_limits_the_packed_rows():
    """Rows stay within Mistral's sliding window; longer requests take the unpacked path."""
    loaded = _with_chars("mistral", max_position_embeddings=32, sliding_window=8, **LLAMA)
    assert packed.window(loaded.model, 32) == 8
    short = [("Q:", " a"), ("Q:", " bc"), ("Q:", " def")]  # one row of exactly 8 tokens
    _check_pairs_against_lm_eval_truncation(loaded, [*short, *PAIRS], window=32)


def test_alibi_model_is_refused_and_scored_without_packing():
    """BLOOM builds its ALiBi biases from a 2-D mask: the one-off check says no, and the pairs
    are scored the unpacked way, still equal to brute force."""
    loaded = _with_chars("bloom", hidden_size=32, n_layer=2, n_head=2)
    assert not packed.supports_packing(loaded.model, loaded.family)
    _check_pairs_against_lm_eval_truncation(loaded, PAIRS, window=2048)  # BLOOM states none


@pytest.mark.parametrize("model_type", ["bert", "t5"])
def test_encoders_are_never_packed(tiny, model_type):
    loaded = tiny(model_type)
    assert not packed.supports_packing(loaded.model, loaded.family)


def test_attention_without_4d_masks_is_not_packed(tiny, monkeypatch):
    loaded = tiny("llama")
    monkeypatch.setattr(loaded.model.config, "_attn_implementation", "flash_attention_2")
    assert not packed.supports_packing(loaded.model, loaded.family)
