"""Packed scoring for decoders: a context and all its continuations in one sequence.

A multiple-choice item scores several continuations of one context. Run as separate
sequences, the context is computed once per choice. Packed, a row holds the context once and
then every continuation's input tokens, one after another:

    context | choice 1 | choice 2 | ...

A 4-D additive attention mask lets each continuation token see the context and the earlier
tokens of its own continuation only, and explicit position ids start every continuation right
after the context, so each continuation is computed exactly as if it followed the context
alone: the same log-likelihoods as separate forwards, up to float rounding. Rows of several
items are batched like `engine.score` batches requests (longest first, right padding, a token
budget), so batches stay full, unlike the KV-cache path (`engine.score_shared_context`), which
runs one context at a time.

Packing needs a decoder that takes a custom 4-D float mask and position ids and reads
positions from nothing else. Transformers' `sdpa` and `eager` attention take a 4-D mask as it
is; flash and flex attention do not, and ALiBi models (BLOOM, Falcon, MPT) derive their biases
from the mask. `supports_packing` therefore checks each model once, on a tiny synthetic item,
against separate forwards; where it says no, callers use the other paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch
from torch import nn

from knowcomp.models.family import Family
from knowcomp.probes import engine
from knowcomp.probes.batching import budget_for, run_batches, unrecorded
from knowcomp.probes.engine import Request, Scored

Group = tuple[tuple[int, ...], Sequence[tuple[int, ...]]]  # (context, continuations)


@dataclass(frozen=True)
class Row:
    """Continuations `members` of group `group`, packed after the group's context."""

    group: int
    members: tuple[int, ...]
    length: int


def window(model: nn.Module, max_length: int) -> int:
    """The longest row whose scores equal separate forwards: the model's window, or its
    local-attention span if shorter (Mistral's `sliding_window`, GPT-Neo's `window_size`):
    the packed mask has no sliding window, so a row must be too short for one to matter."""
    spans = [getattr(model.config, name, None) for name in ("sliding_window", "window_size")]
    return min([max_length, *(s for s in spans if isinstance(s, int) and s > 0)])


def rows(groups: Sequence[Group], cap: int) -> list[Row]:
    """Each group's continuations, in order, in rows of at most `cap` tokens; a row takes at
    least one continuation, so one longer than `cap` gets a row of its own."""
    out = []
    for g, (context, continuations) in enumerate(groups):
        members: list[int] = []
        length = len(context)
        for i, continuation in enumerate(continuations):
            extra = len(continuation) - 1  # the last token is predicted, never read
            if members and length + extra > cap:
                out.append(Row(g, tuple(members), length))
                members, length = [], len(context)
            members.append(i)
            length += extra
        out.append(Row(g, tuple(members), length))
    return out


def score_packed(
    model: nn.Module,
    groups: Sequence[Group],
    *,
    pad_id: int,
    max_length: int,
    max_tokens: int | None = None,
    max_batch: int = 128,
    progress: Callable[[int], object] | None = None,
) -> list[list[Scored]]:
    """Score every continuation of every `(context, continuations)` group; results per group,
    in order. Every context plus continuation must fit `max_length` (see `window`)."""
    device = next(model.parameters()).device
    budget = budget_for(model, max_tokens, "score")
    packed = rows(groups, min(max_length, budget))

    def run(batch: list[int]) -> list[list[Scored]]:  # each row's continuations' scores
        chosen = [packed[b] for b in batch]
        scored = iter(_score_rows(model, groups, chosen, pad_id, device))
        if progress is not None:
            progress(sum(len(row.members) for row in chosen))
        return [[next(scored) for _ in row.members] for row in chosen]

    results: list[list[Scored | None]] = [[None] * len(c) for _, c in groups]
    with torch.inference_mode():
        per_row = run_batches(model, [r.length for r in packed], budget, run,
                              max_batch=max_batch, what="packed row")  # fmt: skip
    for row, scored in zip(packed, per_row, strict=True):
        for i, one in zip(row.members, scored, strict=True):
            results[row.group][i] = one
    return results  # type: ignore[return-value]


def _score_rows(
    model: nn.Module, groups: Sequence[Group], chosen: list[Row], pad_id: int, device
) -> list[Scored]:
    width = max(row.length for row in chosen)
    ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(chosen), width), dtype=torch.long)
    segments = torch.full((len(chosen), width), -1, dtype=torch.long)  # -1: padding
    head_rows, head_cols, index, targets = [], [], [], []
    for b, row in enumerate(chosen):
        context, continuations = groups[row.group]
        n = at = len(context)
        ids[b, :n] = torch.tensor(context)
        positions[b, :n] = torch.arange(n)
        segments[b, :n] = 0
        last = len(head_cols)  # the context's last token predicts every first target
        head_rows.append(b)
        head_cols.append(n - 1)
        for k, i in enumerate(row.members, start=1):
            body = continuations[i][:-1]  # each body token predicts the next target
            m = len(body)
            ids[b, at : at + m] = torch.tensor(body, dtype=torch.long)
            positions[b, at : at + m] = torch.arange(n, n + m)
            segments[b, at : at + m] = k
            index += [last, *range(len(head_cols), len(head_cols) + m)]
            head_rows += [b] * m
            head_cols += range(at, at + m)
            targets.append(continuations[i])
            at += m
    kwargs = {"input_ids": ids.to(device), "position_ids": positions.to(device),
              "use_cache": False}  # fmt: skip

    # the mask follows from the segments: a forward served from kept states never builds it
    def late() -> dict:
        return {"attention_mask": attention_bias(segments, model.dtype).to(device)}

    head_at = (torch.tensor(head_rows, device=device), torch.tensor(head_cols, device=device))
    logits = engine.head_logits(model, *head_at, kwargs, key=(segments,), late=late).float()
    return engine.collect(logits, targets, torch.tensor(index, device=device))


def attention_bias(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive (batch, 1, query, key) mask for rows of segment ids (0: context, k: the
    k-th continuation, -1: padding): a token sees earlier tokens of the context and of its own
    segment. The blocked value is the dtype's minimum, not -inf, so that no row of the softmax
    can turn into NaN. Padding sees the context and earlier padding, never a continuation."""
    width = segments.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((key == 0) | (key == query))
    bias = torch.zeros(allowed.shape, dtype=dtype)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


_VERDICTS: WeakKeyDictionary[nn.Module, bool] = WeakKeyDictionary()


def supports_packing(model: nn.Module, family: Family) -> bool:
    """Does packed scoring give this model's separate-forward scores? Decoders with `sdpa` or
    `eager` attention only, confirmed once per model on a synthetic item (see `_agrees`)."""
    if family is not Family.DECODER:
        return False
    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if model not in _VERDICTS:
        _VERDICTS[model] = _agrees(model)
    return _VERDICTS[model]


def _agrees(model: nn.Module) -> bool:
    """Score two continuations of one context packed and separately, and also the second one
    placed after the first (what a model ignoring the mask or the positions would compute).
    Packing is right when it is much closer to the separate scores than that wrong answer is:
    a relative test, so that a quantized or half-precision model's rounding does not fail it."""
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    context, first, second = (tuple(torch.randint(vocab, (n,), generator=generator).tolist())
                              for n in (5, 4, 4))  # fmt: skip

    def alone(prefix: tuple[int, ...], continuation: tuple[int, ...]) -> Request:
        inputs = prefix + continuation[:-1]
        return Request(inputs, tuple(range(len(prefix) - 1, len(inputs))), continuation)

    try:
        with torch.inference_mode(), unrecorded(model):
            separate = engine.score(model, Family.DECODER, [
                alone(context, first), alone(context, second), alone(context + first, second)],
                pad_id=0)  # fmt: skip
            packed = score_packed(model, [(context, [first, second])], pad_id=0, max_length=64)
    except Exception:  # a model that rejects the mask or the positions: not packable
        return False
    right = torch.tensor(separate[0].logprobs + separate[1].logprobs)
    error = (torch.tensor(packed[0][0].logprobs + packed[0][1].logprobs) - right).abs().max()
    wrong = (torch.tensor(separate[2].logprobs) - right[len(first) :]).abs().max()
    return bool(error <= 1e-4 or error < 0.05 * wrong)
