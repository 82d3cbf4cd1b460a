"""Log-likelihood requests for (context, continuation) pairs, split as lm-evaluation-harness does.

lm-evaluation-harness (HFLM: `loglikelihood`, `_encode_pair`, `_loglikelihood_tokens`) scores a
continuation after a context in four steps, and so does this module, so that a score here means
what the same score means there:

1. trailing whitespace of the context (`str.rstrip()`: spaces and newlines alike) moves onto the
   front of the continuation, so that the context/continuation boundary falls where a BPE
   tokenizer would put a token boundary anyway;
2. `whole = encode(context + continuation)` and `ctx = encode(context)`, each with a BOS token
   first exactly where the model's tokenizer adds one (`knowcomp.probes.inputs`); the
   continuation's tokens are `whole[len(ctx):]`, i.e. the continuation as it is tokenized in
   its context, not on its own;
3. an empty (or all-whitespace) context becomes the prefix token alone (BOS, else end-of-text),
   and the continuation is tokenized on its own;
4. the model reads `(ctx + cont)[-(max_length + 1):][:-1]`, truncated from the left, and the
   last `len(cont)` positions, those that predict the continuation's tokens, are scored.

These rules are for decoders (causal LMs). Encoder-decoders read the context with the encoder
and are scored by `seq2seq.py`, as lm-eval's seq2seq backend scores them; encoders have no
left-to-right likelihood of a continuation, and a one-line error says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.forward import require_decoder
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import engine, packed
from knowcomp.probes.engine import Request, Scored
from knowcomp.probes.inputs import InputRule, as_rule, input_rule

DEFAULT_MAX_LENGTH = 2048  # lm-evaluation-harness's fallback when the model states none
_HUGE = 10**12  # tokenizers without a limit report ~1e30 as model_max_length


def token_ids(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    """Token ids of `text`, without special tokens unless `special`."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def split_pair(
    tokenizer_or_rule: Any, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Context tokens and continuation tokens, split as lm-evaluation-harness splits a pair
    (`inputs.InputRule.split_pair`; a bare tokenizer gets its `auto` rule)."""
    return as_rule(tokenizer_or_rule).split_pair(context, continuation)


def pair_request(
    tokenizer_or_rule: Any, context: str, continuation: str, max_length: int
) -> Request:
    """The engine request that scores every token of `continuation` after `context`."""
    context_ids, cont = split_pair(tokenizer_or_rule, context, continuation)
    check_continuation(context, continuation, cont, max_length)
    tokens = (context_ids + cont)[-(max_length + 1) :]
    inputs = tokens[:-1]
    first = len(inputs) - len(cont)
    return Request(tuple(inputs), tuple(range(first, len(inputs))), tuple(cont))


def check_continuation(context: str, continuation: str, cont: list[int], max_length: int) -> None:
    """A one-line error unless the continuation's tokens `cont` exist and fit the window."""
    if not cont:
        raise KnowcompError(
            f"the continuation {continuation!r} after {context[-40:]!r} has no tokens; "
            "every choice must be non-empty text"
        )
    if len(cont) > max_length:
        raise KnowcompError(
            f"a continuation of {len(cont)} tokens does not fit the model's {max_length}-token "
            "window; shorten the choices"
        )


def model_max_length(loaded: LoadedModel) -> int:
    """The longest input the model takes, found where lm-evaluation-harness looks for it."""
    config = loaded.model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(loaded.tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _HUGE:
        return limit
    return DEFAULT_MAX_LENGTH


def score_pairs(
    loaded: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    *,
    max_tokens: int | None = None,
    progress: Callable[[int], Any] | None = None,
    progress_total: int | None = None,
    rule: InputRule | None = None,
) -> list[Scored]:
    """Score each (context, continuation) pair; results in the order of `pairs`.

    Identical requests are scored once, grouped by context. Decoders that take a custom
    attention mask (`packed.supports_packing`) get each context and all its continuations
    packed into one sequence; the others run each context once for its continuations where
    the engine says that pays (`engine.share_contexts`), and one sequence per pair otherwise.
    `progress`, if given, is advanced in units whose total is `progress_total` (e.g. items,
    not requests). `rule` says how text becomes tokens (default: the tokenizer's `auto` rule).
    Encoder-decoders are scored by `seq2seq.score_pairs` instead.
    """
    if loaded.family is Family.ENCODER_DECODER:
        from knowcomp.probes.mc import seq2seq

        return seq2seq.score_pairs(loaded, pairs, max_tokens=max_tokens, progress=progress,
                                   progress_total=progress_total)  # fmt: skip
    require_decoder(loaded, "multiple-choice probes")
    limit = model_max_length(loaded)
    rule = rule or input_rule(loaded.tokenizer)
    requests = [pair_request(rule, c, x, limit) for c, x in pairs]
    unique = list(dict.fromkeys(requests))
    pad = engine.pad_id_of(loaded.tokenizer)
    step = scaled_progress(progress, len(unique), progress_total)
    by_request: dict[Request, Scored] = {}
    alone = engine.per_sequence(loaded.model)
    if not alone and packed.supports_packing(loaded.model, loaded.family):
        span = packed.window(loaded.model, limit)
        groups = _by_context([r for r in unique if r.length <= span])
        scored = packed.score_packed(
            loaded.model, [(ctx, [r.targets for r in rs]) for ctx, rs in groups.items()],
            pad_id=pad, max_length=span, max_tokens=max_tokens, progress=step,
        )  # fmt: skip
        by_request = _flatten(groups, scored)
        unique = [r for r in unique if r.length > span]  # only under a short sliding window
    if unique:
        by_request |= _score_unpacked(loaded, unique, pad, max_tokens, step)
    return [by_request[r] for r in requests]


def _score_unpacked(
    loaded: LoadedModel, unique: list[Request], pad: int, max_tokens: int | None, step
) -> dict[Request, Scored]:
    """The paths without packing: a context run once for all its continuations (KV cache)
    where that pays, else one padded sequence per request."""
    groups = _by_context(unique)
    device = next(loaded.model.parameters()).device
    plain = sum(len(r.input_ids) for r in unique)
    shared_tokens = sum(
        len(ctx) + sum(len(r.targets) - 1 for r in rs) for ctx, rs in groups.items()
    )
    if not engine.per_sequence(loaded.model) and engine.share_contexts(
        device, plain, shared_tokens
    ):
        shared = engine.score_shared_context(
            loaded.model, [(ctx, [r.targets for r in rs]) for ctx, rs in groups.items()],
            pad_id=pad, max_tokens=max_tokens, progress=step,
        )  # fmt: skip
        return _flatten(groups, shared)
    scored = engine.score(
        loaded.model, loaded.family, unique, pad_id=pad, max_tokens=max_tokens, progress=step
    )
    return dict(zip(unique, scored, strict=True))


def _flatten(
    groups: dict[tuple[int, ...], list[Request]], scored: Sequence[Sequence[Scored]]
) -> dict[Request, Scored]:
    return {r: s for rs, ss in zip(groups.values(), scored, strict=True)
            for r, s in zip(rs, ss, strict=True)}  # fmt: skip


def _by_context(requests: Sequence[Request]) -> dict[tuple[int, ...], list[Request]]:
    """Requests grouped by their context (the tokens up to the one predicting the first
    target), in first-seen order."""
    groups: dict[tuple[int, ...], list[Request]] = {}
    for r in requests:
        groups.setdefault(r.input_ids[: r.positions[0] + 1], []).append(r)
    return groups


def scaled_progress(
    progress: Callable[[int], Any] | None, requests: int, total: int | None
) -> Callable[[int], None] | None:
    """Turn the engine's 'n requests done' into 'n of `total` units done', in whole units."""
    if progress is None:
        return None
    units = requests if total is None else total
    state = {"done": 0, "told": 0}

    def advance(n: int) -> None:
        state["done"] += n
        now = state["done"] * units // max(requests, 1)
        if now > state["told"]:
            progress(now - state["told"])
            state["told"] = now

    return advance
