"""The scoring engine every log-likelihood probe runs on.

A `Request` is one token sequence and the positions whose next-token distributions matter,
with the target token expected at each. The engine sorts requests by length, pads each batch
only to its own longest sequence, and applies the model's vocabulary projection (the LM head)
only at the scored positions, through a forward pre-hook on the head that drops every other
position's hidden state. Nothing is computed twice and nothing is kept but the per-request
results (log-probabilities of the targets, greedy match, rank of the first target).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from knowcomp.models.family import Family
from knowcomp.models.forward import forward_kwargs, output_cache, with_cache
from knowcomp.probes.batching import budget_for, run_batches


@dataclass(frozen=True)
class Request:
    """Score `targets[i]` as the next token after position `positions[i]`.

    For encoder-decoder models `decoder_ids` holds the decoder input and the positions index it;
    otherwise positions index `input_ids`.
    """

    input_ids: tuple[int, ...]
    positions: tuple[int, ...]
    targets: tuple[int, ...]
    decoder_ids: tuple[int, ...] | None = None

    @property
    def length(self) -> int:
        return len(self.input_ids) + len(self.decoder_ids or ())


@dataclass(frozen=True)
class Scored:
    """What the engine returns per request."""

    logprobs: tuple[float, ...]  # log p(target_i | prefix) for each position
    greedy: bool  # every target was the most likely token
    first_rank: int  # rank of the first target in the full vocabulary (1 = top)
    first_top: int  # most likely token id at the first position

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


@contextmanager
def head_only_at(model: nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """While active, the LM head sees only hidden states at (rows[i], cols[i]), as (1, n, H)."""
    head = model.get_output_embeddings()

    def keep_scored(_module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden[rows, cols].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(keep_scored)
    try:
        yield
    finally:
        handle.remove()


# Set on a model by `knowcomp.reuse.PrefixCache` while it records or serves a baseline's states.
PREFIX_CACHE = "_knowcomp_prefix_cache"


def head_logits(
    model: nn.Module,
    rows: torch.Tensor,
    cols: torch.Tensor,
    kwargs: dict,
    key: tuple[torch.Tensor, ...] = (),
    late: Callable[[], dict] | None = None,
) -> torch.Tensor:
    """The LM head's logits (n, V) at (rows[i], cols[i]) of one forward with `kwargs`. A prefix
    cache attached to the model may compute them from states a baseline run kept (`key`: the
    inputs `kwargs` does not show, such as the contexts behind `encoder_outputs`). `late`
    gives more forward arguments, built only when the model runs: they must follow from
    `kwargs` and `key` (a packed row's attention mask follows from its segments), so a served
    forward never builds them."""
    cache = getattr(model, PREFIX_CACHE, None)
    if cache is not None:
        return cache.head_logits(model, rows, cols, kwargs, key, late)
    if late is not None:
        kwargs = kwargs | late()
    with head_only_at(model, rows, cols):
        return model(**kwargs).logits[0]


def encoder_states(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """An encoder-decoder's encoder output for a batch; a prefix cache attached to the model
    may supply the one a baseline run computed."""
    cache = getattr(model, PREFIX_CACHE, None)
    if cache is not None:
        return cache.encoder_states(model, input_ids, attention_mask)
    return model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def pad_id_of(tokenizer) -> int:
    """The tokenizer's padding id; 0 where it has none (padded positions are never scored)."""
    pad = tokenizer.pad_token_id
    return 0 if pad is None else pad


def _pad(seqs: list[tuple[int, ...]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


# Set on a model whose output for an input depends on the whole input sequence (IDP chooses a
# prompt per input): each request must then be its own sequence, never packed with others or
# run on a shared context's cache.
PER_SEQUENCE = "_knowcomp_per_sequence"


def per_sequence(model: nn.Module) -> bool:
    """Must every request run as its own sequence on this model?"""
    return bool(getattr(model, PER_SEQUENCE, False))


def share_contexts(device: torch.device, plain_tokens: int, shared_tokens: int) -> bool:
    """Run each context once for all its continuations? Only on CPU, where compute is the
    limit (accelerators prefer large padded batches), and only when it removes at least 40%
    of the tokens: per-context batches are small, and on SmolLM2 with 2 cores a saving of
    ~25% (PIQA: short questions, long answers) ran slower, while BoolQ (~50%) ran 1.6x and
    LAMA candidate ranking (~90%) 12x faster."""
    return device.type == "cpu" and shared_tokens <= 0.6 * plain_tokens


def score(
    model: nn.Module,
    family: Family,
    requests: Sequence[Request],
    *,
    pad_id: int,
    max_tokens: int | None = None,
    max_batch: int = 128,
    progress=None,
) -> list[Scored]:
    """Score every request; results come back in the order of `requests`. Batches hold at
    most `max_tokens` padded tokens (None: the device's default; see `probes.batching`)."""
    device = next(model.parameters()).device
    budget = budget_for(model, max_tokens, "score")

    def run(batch: list[int]) -> list[Scored]:
        scored = _score_batch(model, family, [requests[i] for i in batch], pad_id, device)
        if progress is not None:
            progress(len(batch))
        return scored

    with torch.inference_mode():
        return run_batches(model, [r.length for r in requests], budget, run, max_batch=max_batch)


def _score_batch(
    model: nn.Module, family: Family, reqs: list[Request], pad_id: int, device
) -> list[Scored]:
    ids, mask = _pad([r.input_ids for r in reqs], pad_id, device)
    dec = dec_mask = None
    if family is Family.ENCODER_DECODER:
        dec, dec_mask = _pad([r.decoder_ids or () for r in reqs], pad_id, device)
    kwargs = forward_kwargs(
        family, ids, mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask
    )
    rows = torch.tensor([b for b, r in enumerate(reqs) for _ in r.positions], device=device)
    cols = torch.tensor([p for r in reqs for p in r.positions], device=device)
    logits = head_logits(model, rows, cols, kwargs).float()
    return collect(logits, [r.targets for r in reqs])


def first_ranks(rows: torch.Tensor, targets: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """Each target's rank in its row of logits (1 = top, int32), ties ordered as `argmax`
    breaks them (the lower token id first), so that rank 1 is exactly the greedy pick `picks`.

    An exact tie with the target takes a zeroed head row (its logit is then exactly 0, as after
    structured pruning of the head) or a float coincidence. Ties are counted in the rows where
    the target's logit is 0 or the pick is another token at rank 1: that covers the first case
    and every top-1 answer. A coincidental tie below the top stays counted in the target's
    favour (finding one would cost another pass over every row; it moves a rank by one)."""
    value = rows.gather(1, targets[:, None])
    ranks = (rows > value).sum(dim=-1, dtype=torch.int32) + 1
    suspect = ((value[:, 0] == 0) | ((ranks == 1) & (picks != targets))).nonzero()[:, 0]
    for row in suspect.tolist():  # a row at a time, on views: 3x cheaper than a gathered copy
        ranks[row] += int((rows[row, : int(targets[row])] == value[row, 0]).sum())
    return ranks


def collect(
    logits: torch.Tensor, targets: Sequence[Sequence[int]], index: torch.Tensor | None = None
) -> list[Scored]:
    """Per-sequence results from head logits (n, V). Target positions are counted in order,
    `targets[0]`'s first, then `targets[1]`'s, and so on; position j's logits are row
    `index[j]` (default: row j), so that sequences predicted from one shared position (the
    continuations of one context) need the head there only once.

    Each pass over the (n, V) logits is the cheapest exact one: `max(dim).indices` is
    `argmax` (both the first maximal index) at about half its time on the CPU, and a rank
    counts in int32 on the rows themselves when every row starts a sequence (LAMA) instead of
    a copy of them."""
    flat = torch.tensor([t for ts in targets for t in ts], device=logits.device)
    starts = torch.tensor([0, *itertools.accumulate(len(ts) for ts in targets)][:-1],
                          device=logits.device)  # fmt: skip
    if index is None:
        index = torch.arange(len(flat), device=logits.device)
    target_lp = torch.log_softmax(logits, dim=-1)[index, flat]
    top = logits.max(dim=-1).indices[index]
    first_rows = index[starts]
    every_row = len(first_rows) == logits.shape[0] and bool(
        (first_rows == torch.arange(len(first_rows), device=logits.device)).all()
    )
    first = logits if every_row else logits[first_rows]
    ranks = first_ranks(first, flat[starts], top[starts]).tolist()
    lps, tops, hits = target_lp.tolist(), top.tolist(), (top == flat).tolist()
    out, start = [], 0
    for k, ts in enumerate(targets):
        end = start + len(ts)
        out.append(Scored(logprobs=tuple(lps[start:end]), greedy=all(hits[start:end]),
                          first_rank=ranks[k], first_top=tops[start]))  # fmt: skip
        start = end
    return out


def score_shared_context(
    model: nn.Module,
    groups: Sequence[tuple[tuple[int, ...], Sequence[tuple[int, ...]]]],
    *,
    pad_id: int,
    max_tokens: int | None = None,
    progress=None,
) -> list[list[Scored]]:
    """Decoders: score several continuations of one context, running the context once.

    Each group is `(context, continuations)`. The context goes through the model once; its
    key/value cache is then copied for a batch of continuations, which are run on top of it.
    The first token of every continuation is predicted by the context's last position, so
    one-token continuations (yes/no, most LAMA candidates) cost nothing beyond the context.
    """
    device = next(model.parameters()).device
    budget = budget_for(model, max_tokens, "score")
    results = []
    with torch.inference_mode():
        for context, continuations in groups:
            results.append(_score_group(model, context, continuations, pad_id, budget, device))
            if progress is not None:
                progress(len(continuations))
    return results


def _score_group(
    model: nn.Module,
    context: tuple[int, ...],
    continuations: Sequence[tuple[int, ...]],
    pad_id: int,
    max_tokens: int,
    device,
) -> list[Scored]:
    last = torch.tensor([len(context) - 1], device=device)

    def run_context(_: list[int]) -> list:
        with head_only_at(model, torch.tensor([0], device=device), last):
            return [model(input_ids=torch.tensor([context], device=device), use_cache=True)]

    [first] = run_batches(model, [len(context)], max_tokens, run_context, what="context")
    first_logits = first.logits[0, 0].float()
    first_lp = torch.log_softmax(first_logits, dim=-1)
    first_top = int(first_logits.argmax())
    # rest[i]: log-probabilities and argmax for tokens 1.. of continuation i, in batches of
    # continuations as wide as the longest, on copies of the context's cache
    longer = [i for i, c in enumerate(continuations) if len(c) > 1]
    width = max((len(continuations[i]) - 1 for i in longer), default=0)

    def run_chunk(batch: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        chunk = [longer[j] for j in batch]
        found = _score_rest(model, output_cache(first), context, continuations, chunk,
                            pad_id, device)  # fmt: skip
        return [found[i] for i in chunk]

    sizes = [len(context) + width] * len(longer)
    scored = run_batches(model, sizes, max_tokens, run_chunk, max_batch=max(1, len(longer)))
    rest = dict(zip(longer, scored, strict=True))
    firsts = torch.tensor([c[0] for c in continuations], device=device)
    ranks = first_ranks(first_logits.expand(len(continuations), -1), firsts,
                        torch.full_like(firsts, first_top)).tolist()  # fmt: skip
    out = []
    for i, continuation in enumerate(continuations):
        target = continuation[0]
        logprobs = [float(first_lp[target])]
        greedy = first_top == target
        if i in rest:
            lp, top = rest[i]
            targets = torch.tensor(continuation[1:], device=device)
            logprobs += lp.gather(1, targets[:, None])[:, 0].tolist()
            greedy = greedy and bool((top == targets).all())
        out.append(Scored(tuple(logprobs), greedy, ranks[i], first_top))
    return out


def _score_rest(
    model: nn.Module,
    cache,
    context: tuple[int, ...],
    continuations: Sequence[tuple[int, ...]],
    chunk: list[int],
    pad_id: int,
    device,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Run tokens 0..n-2 of each continuation in `chunk` on a copy of the context's cache."""
    import copy

    inputs = [continuations[i][:-1] for i in chunk]
    ids, mask = _pad(inputs, pad_id, device)
    mask = torch.cat([torch.ones((len(chunk), len(context)), dtype=mask.dtype, device=device),
                      mask], dim=1)  # fmt: skip
    batch_cache = copy.deepcopy(cache)
    batch_cache.batch_repeat_interleave(len(chunk))
    rows = torch.tensor([b for b, seq in enumerate(inputs) for _ in seq], device=device)
    cols = torch.tensor([p for seq in inputs for p in range(len(seq))], device=device)
    with head_only_at(model, rows, cols):
        logits = model(input_ids=ids, attention_mask=mask, **with_cache(model, batch_cache),
                       use_cache=True).logits[0].float()  # fmt: skip
    logprobs = torch.log_softmax(logits, dim=-1)
    top = logits.argmax(dim=-1)
    out, start = {}, 0
    for i, seq in zip(chunk, inputs, strict=True):
        out[i] = (logprobs[start : start + len(seq)], top[start : start + len(seq)])
        start += len(seq)
    return out
