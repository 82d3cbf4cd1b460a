"""Log-likelihood requests for encoder-decoders (T5, BART), built as lm-evaluation-harness's
sequence-to-sequence backend builds them (`HFLM(backend="seq2seq")`, lm-eval 0.4.13).

The encoder reads the context; the decoder is scored on the continuation, one target token per
position, starting from the model's decoder start token. Step by step, as lm-eval does it
(`TemplateLM.loglikelihood`, `_encode_pair`, `HFLM._loglikelihood_tokens`):

1. trailing whitespace of the context moves onto the front of the continuation;
2. the context and the continuation are tokenized separately: the context with the tokenizer's
   own special tokens (T5 appends `</s>`, BART wraps in `<s> ... </s>`), unless it already
   starts with the text of the prefix token; the continuation without special tokens;
3. an empty context (exactly `""`) becomes the prefix token alone (the BOS token, or the EOS
   token where there is none), unless the continuation already starts with that token, which
   then moves into the context;
4. the encoder reads the last `max_length` context tokens; the decoder reads the start token
   and all but the last continuation token (the model's own label shift, which lm-eval triggers
   by passing the continuation as `labels`), and position i is scored on continuation token i.

Why not the decoder rules of `requests.py`: a decoder tokenizes context and continuation
together and splits them, because its continuation follows the context in one sequence; here
they are two sequences, and lm-eval tokenizes them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from knowcomp.errors import KnowcompError
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import engine
from knowcomp.probes.batching import budget_for, run_batches
from knowcomp.probes.engine import Request, Scored
from knowcomp.probes.mc.requests import check_continuation


def encode(tokenizer: Any, text: str, special: bool | None = None) -> list[int]:
    """lm-eval's `tok_encode`: the tokenizer's own special tokens unless `special` says, or
    unless the text already starts with the prefix token's text (then none are added)."""
    prefix = [t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None][:1]
    if special is None and prefix and text.startswith(tokenizer.decode(prefix)):
        special = False
    kwargs = {} if special is None else {"add_special_tokens": special}
    return list(tokenizer.encode(text, **kwargs))


def prefix_id(tokenizer: Any) -> int:
    """lm-eval's `prefix_token_id`: the BOS token, else the EOS token."""
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    raise KnowcompError(
        "this tokenizer has neither a start nor an end-of-text token, which an encoder-decoder "
        "needs to read an empty context; give every item a non-empty context"
    )


def split_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Encoder tokens of `context` and decoder target tokens of `continuation` (steps 1-3)."""
    if context == "":
        cont = encode(tokenizer, continuation, special=False)
        start = prefix_id(tokenizer)
        if cont and cont[0] == start:
            return cont[:1], cont[1:]
        return [start], cont
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    return encode(tokenizer, stripped), encode(tokenizer, continuation, special=False)


def decoder_start_id(model: nn.Module) -> int:
    """The token the decoder starts from: what the model's own label shift puts first (T5: its
    pad id, BART: `</s>`), else the config's `decoder_start_token_id`."""
    shift = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if shift is not None:
        try:
            return int(shift(labels=torch.zeros((1, 1), dtype=torch.long))[0, 0])
        except (AttributeError, TypeError, ValueError):
            pass  # a config without decoder_start_token_id (transformers raises); try the rest
    for source in (model.config, getattr(model, "generation_config", None)):
        start = getattr(source, "decoder_start_token_id", None)
        if isinstance(start, int):
            return start
    raise KnowcompError(
        "the encoder-decoder's config has no decoder_start_token_id, so its decoder has no "
        "first token; set it in config.json (T5 models use 0, their pad id; BART 2, its </s>)"
    )


def pair_request(
    tokenizer: Any, context: str, continuation: str, max_length: int, start: int
) -> Request:
    """The engine request scoring every token of `continuation` as the decoder's target after
    the encoder read `context` (step 4)."""
    context_ids, cont = split_pair(tokenizer, context, continuation)
    if not context_ids:
        raise KnowcompError(
            f"the context {context[-40:]!r} has no tokens for the encoder (its tokenizer adds "
            "no special tokens); give every item a non-empty context"
        )
    check_continuation(context, continuation, cont, max_length)
    return Request(
        input_ids=tuple(context_ids[-max_length:]),
        positions=tuple(range(len(cont))),
        targets=tuple(cont),
        decoder_ids=(start, *cont[:-1]),
    )


def score_pairs(
    loaded: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    *,
    max_tokens: int | None = None,
    progress: Callable[[int], Any] | None = None,
    progress_total: int | None = None,
) -> list[Scored]:
    """Score each (context, continuation) pair on an encoder-decoder; results in the order of
    `pairs`. Identical requests are scored once, and each distinct context is encoded once."""
    from knowcomp.probes.mc.requests import model_max_length, scaled_progress

    limit = model_max_length(loaded)
    start = decoder_start_id(loaded.model)
    requests = [pair_request(loaded.tokenizer, c, x, limit, start) for c, x in pairs]
    unique = list(dict.fromkeys(requests))
    scored = score_shared_encoder(
        loaded.model, unique, pad_id=engine.pad_id_of(loaded.tokenizer), max_tokens=max_tokens,
        progress=scaled_progress(progress, len(unique), progress_total),
    )  # fmt: skip
    by_request = dict(zip(unique, scored, strict=True))
    return [by_request[r] for r in requests]


def score_shared_encoder(
    model: nn.Module,
    requests: Sequence[Request],
    *,
    pad_id: int,
    max_tokens: int | None = None,
    max_batch: int = 128,
    progress: Callable[[int], Any] | None = None,
) -> list[Scored]:
    """Score encoder-decoder requests (`Request.decoder_ids` set), running the encoder once per
    distinct context: a batch of contexts goes through the encoder, then every continuation
    of those contexts through the decoder, on its context's encoder states. The same scores
    as `engine.score`, which runs the encoder once per request; BoolQ's two answers and
    HellaSwag's four endings share one passage each, so most of the encoder work goes."""
    device = next(model.parameters()).device
    budget = budget_for(model, max_tokens, "seq2seq")
    groups: dict[tuple[int, ...], list[int]] = {}  # context -> its requests
    for i, request in enumerate(requests):
        groups.setdefault(request.input_ids, []).append(i)
    contexts = list(groups)
    sizes = [len(c) + sum(len(requests[i].decoder_ids or ()) for i in groups[c]) for c in contexts]

    def run(batch: list[int]) -> list[list[Scored]]:  # each context's requests' scores
        chosen = [contexts[b] for b in batch]
        members = [[requests[i] for i in groups[c]] for c in chosen]
        scored = iter(_score_contexts(model, chosen, members, pad_id, device))
        if progress is not None:
            progress(sum(len(m) for m in members))
        return [[next(scored) for _ in m] for m in members]

    results: list[Scored | None] = [None] * len(requests)
    with torch.inference_mode():
        per_context = run_batches(model, sizes, budget, run, max_batch=max_batch,
                                  what="context with its continuations")  # fmt: skip
    for context, scored in zip(contexts, per_context, strict=True):
        for i, result in zip(groups[context], scored, strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


def _score_contexts(
    model: nn.Module,
    contexts: list[tuple[int, ...]],
    members: list[list[Request]],
    pad_id: int,
    device: torch.device,
) -> list[Scored]:
    """One encoder pass over `contexts`, one decoder pass over all their requests, in order."""
    ids, mask = engine._pad(contexts, pad_id, device)
    states = engine.encoder_states(model, ids, mask)
    rows = torch.tensor([b for b, m in enumerate(members) for _ in m], device=device)
    flat = [r for m in members for r in m]
    dec, dec_mask = engine._pad([r.decoder_ids or () for r in flat], pad_id, device)
    head_rows = torch.tensor([k for k, r in enumerate(flat) for _ in r.positions], device=device)
    head_cols = torch.tensor([p for r in flat for p in r.positions], device=device)
    encoded = BaseModelOutput(last_hidden_state=states[rows])  # each request's context
    kwargs = {"encoder_outputs": encoded, "attention_mask": mask[rows], "decoder_input_ids": dec,
              "decoder_attention_mask": dec_mask, "use_cache": False}  # fmt: skip
    logits = engine.head_logits(model, head_rows, head_cols, kwargs, key=(ids, mask, rows)).float()
    return engine.collect(logits, [r.targets for r in flat])
