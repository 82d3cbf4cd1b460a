"""Greedy generation for the open-answer probes (TriviaQA, WebQuestions, LAMA's generate mode).

Prompts are sorted by length and run in left-padded batches. Each batch reads its prompts once
(the LM head applied at the last position only) and then feeds one new token per step on the
key/value cache, so no prompt is ever encoded twice. After every step each sequence is checked
against the stop rule (a stop string in its decoded text, an end-of-sequence token, or the
max-new-tokens cap); finished sequences leave the batch and the cache at once, so the steps
that remain run on the sequences still generating.

Why not `model.generate`: it gives the same tokens (greedy is greedy), but it keeps every
finished sequence in the batch, padding it, until the whole batch has stopped, and a stop
string has to be a `StoppingCriteria` that decodes every row at every step. On 64 TriviaQA
prompts with SmolLM2 (2 CPU cores, cap 32) the loop here ran 2.2x faster than `generate` with
such a criterion, at the same batch size and with the same answers (once, on a machine shared
with other jobs; `BENCHMARKS.md` has the comparison with lm-eval). It also applies only the
argmax: a model's own generation config (repetition penalties, forced tokens) is not applied,
because a probe measures the model's greedy answer, not a decoding recipe.

The answer is what lm-evaluation-harness's `generate_until` keeps: the generated tokens decoded
without special tokens, cut before the first stop string. A sequence that reached the cap
without a stop string or an end-of-sequence token is reported as `capped`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.forward import output_cache, with_cache
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.batching import budget_for, run_batches
from knowcomp.probes.engine import per_sequence
from knowcomp.probes.inputs import InputRule, input_rule

DEFAULT_STOPS = ("\n", ".", ",")  # lm-eval's TriviaQA `until`: newline, period, comma
DEFAULT_MAX_NEW_TOKENS = 32

# Sequences per batch and padded prompt tokens per batch. Every step reads all the weights
# once whatever the batch, so larger batches are cheaper per token, up to the point where
# the compute dominates. On the shared 2-core machine, 64 TriviaQA prompts with SmolLM2 took
# 69 to 122 s of CPU at 8, 16, 32 and 64 prompts a batch, in no consistent order (noise);
# 32 is the middle.
DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class StopRule:
    """When a generated answer ends: at the first stop string, at an end-of-sequence token, or
    after `max_new_tokens` tokens (the cap)."""

    stops: tuple[str, ...] = DEFAULT_STOPS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def __post_init__(self) -> None:
        check_cap(self.max_new_tokens)
        if any(not isinstance(s, str) or not s for s in self.stops):
            raise KnowcompError(f"stop strings must be non-empty text; got {self.stops!r}")

    def cut(self, text: str, extra: Sequence[str] = ()) -> tuple[str, bool]:
        """`text` before its first stop string, and whether there was one."""
        found = [i for i in (text.find(s) for s in (*self.stops, *extra)) if i >= 0]
        return (text[: min(found)], True) if found else (text, False)


def rule_for(options: RunOptions, stops: tuple[str, ...] = DEFAULT_STOPS) -> StopRule:
    """The stop rule of a probe run: `stops`, and the run's cap (`RunOptions.max_new_tokens`,
    32 tokens if unset; a one-line error if it is below 1)."""
    cap = DEFAULT_MAX_NEW_TOKENS if options.max_new_tokens is None else options.max_new_tokens
    return StopRule(stops, cap)


def check_cap(max_new_tokens: Any) -> None:
    """A one-line error unless the cap is a whole number of tokens, at least 1."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise KnowcompError(f"the generation cap must be a whole number; got {max_new_tokens!r}")
    if max_new_tokens < 1:
        raise KnowcompError(
            f"the generation cap (max new tokens) must be at least 1; got {max_new_tokens}"
        )


@dataclass(frozen=True)
class Generation:
    """One prompt's greedy continuation."""

    tokens: tuple[int, ...]  # generated ids, up to the step that ended the answer
    text: str  # the answer: decoded without special tokens, cut before the first stop string
    finish: str  # "stop" (a stop string), "eos" (end-of-sequence token) or "cap"

    @property
    def capped(self) -> bool:
        return self.finish == "cap"


def eos_ids_of(loaded: LoadedModel) -> frozenset[int]:
    """End-of-sequence ids: the generation config's (what `model.generate` stops at) and the
    tokenizer's."""
    ids: set[int] = set()
    config = getattr(loaded.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list | tuple):
        ids.update(int(e) for e in eos)
    tok_eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if tok_eos is not None:
        ids.add(int(tok_eos))
    return frozenset(ids)


def generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    decode: Callable[[Sequence[int]], str],
    rule: StopRule,
    eos_ids: frozenset[int] | set[int] = frozenset(),
    pad_id: int = 0,
    extra_stops: Sequence[Sequence[str]] | None = None,
    max_batch: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> list[Generation]:
    """Greedy continuations of token-id prompts (decoders), in the order of `prompts`.

    `decode` turns generated ids into text (without special tokens); `extra_stops[i]` are stop
    strings for prompt i only, on top of `rule.stops`. `progress(n)` is told as sequences end.
    """
    if extra_stops is not None and len(extra_stops) != len(prompts):
        raise ValueError("extra_stops needs one entry per prompt")
    if any(len(p) == 0 for p in prompts):
        raise KnowcompError("an empty prompt cannot be continued; give every item some text")
    max_batch = max_batch or DEFAULT_MAX_BATCH
    if per_sequence(model):  # a choice per row (IDP) would not follow a batch that shrinks
        max_batch = 1
    budget = budget_for(model, max_tokens, "generate")
    device = next(model.parameters()).device
    params = _forward_params(model)
    # The LM head at the last position only, where the model offers it. Left-padded rows need
    # explicit positions; a model that takes none (Bloom's ALiBi) gets unpadded batches of
    # equal-length prompts instead, since in transformers 5 its padded rows differ from
    # unpadded ones (with `generate` too).
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    with_positions = "position_ids" in params

    def plan(indices: list[int], tokens: int) -> list[list[int]]:
        planned = _batches([prompts[i] for i in indices], max_batch, tokens, not with_positions)
        return [[indices[j] for j in b] for b in planned]

    def run(batch: list[int]) -> list[Generation]:
        extras = [tuple(extra_stops[i]) if extra_stops else () for i in batch]
        return _generate_batch(model, [prompts[i] for i in batch], extras, decode, rule,
                               eos_ids, pad_id, device, keep_last, with_positions)  # fmt: skip

    with torch.inference_mode():
        return run_batches(model, [len(p) for p in prompts], budget, told_once(run, progress),
                           plan=plan, what="prompt")  # fmt: skip


def told_once(
    run: Callable[[list[int]], list[Generation]], progress: Callable[[int], Any] | None
) -> Callable[[list[int]], list[Generation]]:
    """`run`, telling `progress` of a batch's answers once the whole batch is done (a batch
    that ran out of memory is retried, and its answers must not be counted twice)."""

    def counted(batch: list[int]) -> list[Generation]:
        done = run(batch)
        if progress is not None:
            progress(len(done))
        return done

    return counted


def _batches(
    prompts: Sequence[Sequence[int]], max_batch: int, max_tokens: int, same_length: bool = False
) -> list[list[int]]:
    """Indices, longest prompt first, in batches of at most `max_batch` prompts whose padded
    size stays within `max_tokens` (a longer prompt always gets a batch of its own); with
    `same_length`, only prompts of one length share a batch (no padding at all)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = []
    for i in order:
        if (
            out
            and len(out[-1]) < max_batch
            and len(prompts[out[-1][0]]) * (len(out[-1]) + 1) <= max_tokens
            and (not same_length or len(prompts[out[-1][0]]) == len(prompts[i]))
        ):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _forward_params(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _generate_batch(
    model: nn.Module,
    prompts: list[Sequence[int]],
    extras: list[tuple[str, ...]],
    decode: Callable[[Sequence[int]], str],
    rule: StopRule,
    eos_ids: frozenset[int] | set[int],
    pad_id: int,
    device: torch.device,
    keep_last: dict[str, int],
    with_positions: bool,
) -> list[Generation]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding: every prompt ends in the last column
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as `generate` numbers left-padded rows
    extra = {"position_ids": positions} if with_positions else {}
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, **extra, **keep_last)
    cache = output_cache(out)
    following = out.logits[:, -1].argmax(-1)
    next_position = mask.sum(-1)
    alive = list(range(len(prompts)))  # batch row -> prompt index
    answers = Answers(extras, decode, rule, eos_ids)
    while True:
        keep = answers.step(alive, following)
        if not keep:
            return answers.done()
        if len(keep) < len(alive):
            rows = torch.tensor(keep, device=device)
            cache.batch_select_indices(rows)
            mask, following, next_position = mask[rows], following[rows], next_position[rows]
            alive = [alive[row] for row in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        extra = {"position_ids": next_position[:, None]} if with_positions else {}
        out = model(input_ids=following[:, None], attention_mask=mask, **with_cache(model, cache),
                    use_cache=True, **extra)  # fmt: skip
        cache = output_cache(out)
        following = out.logits[:, -1].argmax(-1)
        next_position = next_position + 1


class Answers:
    """Each prompt's generated tokens and, once it has ended, its answer: one step at a time."""

    def __init__(
        self,
        extras: list[tuple[str, ...]],
        decode: Callable[[Sequence[int]], str],
        rule: StopRule,
        eos_ids: frozenset[int] | set[int],
    ) -> None:
        self.extras, self.decode, self.rule, self.eos_ids = extras, decode, rule, eos_ids
        self.tokens: list[list[int]] = [[] for _ in extras]
        self.finished: list[Generation | None] = [None] * len(extras)

    def step(self, alive: list[int], following: torch.Tensor) -> list[int]:
        """Append row i's new token `following[i]` to prompt `alive[i]`; the rows still
        generating (the others' answers are kept)."""
        keep = []
        for row, index in enumerate(alive):
            self.tokens[index].append(int(following[row]))
            ending = _ending(
                self.tokens[index], self.extras[index], self.decode, self.rule, self.eos_ids
            )
            if ending is None:
                keep.append(row)
            else:
                self.finished[index] = ending
        return keep

    def done(self) -> list[Generation]:
        return self.finished  # type: ignore[return-value]


def _ending(
    generated: list[int],
    extra: tuple[str, ...],
    decode: Callable[[Sequence[int]], str],
    rule: StopRule,
    eos_ids: frozenset[int] | set[int],
) -> Generation | None:
    """The finished answer if the last token ended it, else None."""
    if generated[-1] in eos_ids:
        text, _ = rule.cut(decode(generated[:-1]), extra)
        return Generation(tuple(generated), text, "eos")
    text, stopped = rule.cut(decode(generated), extra)
    if stopped:
        return Generation(tuple(generated), text, "stop")
    if len(generated) >= rule.max_new_tokens:
        return Generation(tuple(generated), text, "cap")
    return None


def generate_texts(
    loaded: LoadedModel,
    prompts: Sequence[str],
    rule: StopRule,
    *,
    extra_stops: Sequence[Sequence[str]] | None = None,
    max_batch: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[int], Any] | None = None,
    inputs: InputRule | None = None,
) -> list[Generation]:
    """Greedy answers to text prompts with `loaded`'s tokenizer, as lm-eval's `generate_until`
    encodes them: a BOS token first where `inputs` says so (by default, where the tokenizer
    adds one), the prompt cut from the left to leave room for the cap in the model's window,
    and an empty prompt replaced by the prefix token (BOS, else end-of-text). Encoder-decoders
    generate through `generate_seq2seq.generate_texts`, as lm-eval's seq2seq backend encodes
    their prompts."""
    from knowcomp.models.forward import require_continuations
    from knowcomp.probes.mc.requests import model_max_length

    if loaded.family is Family.ENCODER_DECODER:
        from knowcomp.probes import generate_seq2seq

        return generate_seq2seq.generate_texts(
            loaded, prompts, rule, extra_stops=extra_stops, max_batch=max_batch,
            max_tokens=max_tokens, progress=progress,
        )  # fmt: skip
    require_continuations(loaded, "generation probes")
    tokenizer = loaded.tokenizer
    inputs = inputs or input_rule(tokenizer)
    room = model_max_length(loaded) - rule.max_new_tokens
    if room < 1:
        raise KnowcompError(
            f"a generation cap of {rule.max_new_tokens} tokens leaves no room for the prompt in "
            f"{loaded.spec}'s {model_max_length(loaded)}-token window; lower the cap"
        )
    encoded = []
    for prompt in prompts:
        ids = inputs.encode(prompt)[-room:]
        if not ids:
            if inputs.prefix_id is None:
                raise KnowcompError("an empty prompt needs a start or end-of-text token")
            ids = [inputs.prefix_id]
        encoded.append(ids)
    pad = tokenizer.pad_token_id
    return generate(
        loaded.model, encoded,
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        rule=rule, eos_ids=eos_ids_of(loaded), pad_id=0 if pad is None else pad,
        extra_stops=extra_stops, max_batch=max_batch, max_tokens=max_tokens, progress=progress,
    )  # fmt: skip
