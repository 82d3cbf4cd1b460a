"""Greedy generation for encoder-decoders (T5, BART): the open-answer probes (TriviaQA,
WebQuestions) as lm-evaluation-harness's seq2seq backend runs them (`HFLM.generate_until`).

The prompt is encoded as lm-eval encodes it (`tok_batch_encode`): with the tokenizer's own
special tokens (T5 appends `</s>`), the last `max_length` tokens kept; the encoder reads the
whole window, no room is kept for the answer, which the decoder holds. The encoder runs once per
batch; the decoder then starts from the model's decoder start token and feeds one new token per
step on its key/value cache (self-attention and the cached cross-attention), and finished
sequences leave the batch, the encoder states and the cache at once, as in `generate.py`. The
answer and the stop rule are `generate.py`'s: the generated tokens decoded without special
tokens, cut before the first stop string; an end-of-sequence token or the cap also ends it.

Two differences from lm-eval that leave its answers unchanged where it would give the same:

- lm-eval left-pads a batch of prompts for the encoder; T5's relative positions ignore that,
  but BART's absolute positions shift, so a BART prompt's answer depends on its batch there.
  Here prompts are right-padded, which equals each prompt run alone (lm-eval at batch size 1).
- lm-eval's cap for an encoder-decoder is `len(prompt) + max_gen_toks` decoder tokens (its
  `max_length` counts the prompt, which the decoder never reads), and `model.generate` applies
  the model's generation config (BART's forces `</s>` as the last token). Here the cap is
  `max_new_tokens` new tokens and the decoding is plain argmax; answers agree wherever they end
  before the cap, and lm-eval run with `max_length` = cap + 1 gives the same capped answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from knowcomp.errors import KnowcompError
from knowcomp.models.forward import output_cache, with_cache
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import engine
from knowcomp.probes.batching import budget_for, run_batches
from knowcomp.probes.generate import (
    DEFAULT_MAX_BATCH,
    Answers,
    Generation,
    StopRule,
    eos_ids_of,
    told_once,
)
from knowcomp.probes.mc.seq2seq import decoder_start_id


def generate_texts(
    loaded: LoadedModel,
    prompts: Sequence[str],
    rule: StopRule,
    *,
    extra_stops: Sequence[Sequence[str]] | None = None,
    max_batch: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> list[Generation]:
    """Greedy answers of an encoder-decoder to text prompts, in the order of `prompts`."""
    from knowcomp.probes.mc.requests import model_max_length

    tokenizer = loaded.tokenizer
    window = model_max_length(loaded)
    encoded = []
    for prompt in prompts:
        ids = list(tokenizer(prompt)["input_ids"])[-window:]
        if not ids:
            raise KnowcompError(
                "an empty prompt gives the encoder nothing to read (the tokenizer adds no "
                "special tokens); give every item some text"
            )
        encoded.append(ids)
    return generate(
        loaded.model, encoded,
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        rule=rule, eos_ids=eos_ids_of(loaded), pad_id=engine.pad_id_of(tokenizer),
        start_id=decoder_start_id(loaded.model), extra_stops=extra_stops,
        max_batch=max_batch, max_tokens=max_tokens, progress=progress,
    )  # fmt: skip


def generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    decode: Callable[[Sequence[int]], str],
    rule: StopRule,
    eos_ids: frozenset[int] | set[int],
    pad_id: int,
    start_id: int,
    extra_stops: Sequence[Sequence[str]] | None = None,
    max_batch: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> list[Generation]:
    """Greedy continuations of token-id prompts (encoder inputs), in the order of `prompts`;
    the arguments mean what they mean in `generate.generate`."""
    if extra_stops is not None and len(extra_stops) != len(prompts):
        raise ValueError("extra_stops needs one entry per prompt")
    device = next(model.parameters()).device
    budget = budget_for(model, max_tokens, "generate")

    def run(batch: list[int]) -> list[Generation]:
        extras = [tuple(extra_stops[i]) if extra_stops else () for i in batch]
        return _generate_batch(model, [prompts[i] for i in batch], extras, decode, rule,
                               eos_ids, pad_id, start_id, device)  # fmt: skip

    with torch.inference_mode():
        return run_batches(model, [len(p) for p in prompts], budget, told_once(run, progress),
                           max_batch=max_batch or DEFAULT_MAX_BATCH, what="prompt")  # fmt: skip


def _generate_batch(
    model: nn.Module,
    prompts: list[Sequence[int]],
    extras: list[tuple[str, ...]],
    decode: Callable[[Sequence[int]], str],
    rule: StopRule,
    eos_ids: frozenset[int] | set[int],
    pad_id: int,
    start_id: int,
    device: torch.device,
) -> list[Generation]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):  # right padding: positions as in an unpadded run
        ids[row, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, : len(prompt)] = 1
    ids, mask = ids.to(device), mask.to(device)
    states = engine.encoder_states(model, ids, mask)
    following = torch.full((len(prompts),), start_id, dtype=torch.long, device=device)
    cache = None
    alive = list(range(len(prompts)))  # batch row -> prompt index
    answers = Answers(extras, decode, rule, eos_ids)
    while True:
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=states),
                    attention_mask=mask, decoder_input_ids=following[:, None],
                    **with_cache(model, cache), use_cache=True)  # fmt: skip
        cache = output_cache(out)
        following = out.logits[:, -1].argmax(-1)
        keep = answers.step(alive, following)
        if not keep:
            return answers.done()
        if len(keep) < len(alive):
            rows = torch.tensor(keep, device=device)
            cache.batch_select_indices(rows)
            states, mask, following = states[rows], mask[rows], following[rows]
            alive = [alive[row] for row in keep]
