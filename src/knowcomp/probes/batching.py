"""How many tokens go into one batch, per device, and what happens when a batch does not fit.

Every probe loop (`engine.score`, `engine.score_shared_context`, `packed.score_packed`,
`mc.seq2seq.score_shared_encoder`, both generation loops) plans its batches under a budget of
padded tokens and runs them through `run_batches`. The budget is the user's (`--batch-tokens`,
a spec's `batch_tokens`) or the device's default (`default_batch_tokens`). When a batch raises
an out-of-memory error (CUDA's `torch.OutOfMemoryError`, MPS's "out of memory", the CPU
allocator's "can't allocate memory"), the budget is halved below that batch's size, the batch
is planned again under it and retried, down to one sequence a batch; a single sequence that
still does not fit is a one-line `KnowcompError`. Splitting a batch changes only which
sequences share a forward pass, so the results are those of an unsplit run. The lowered budget
is remembered for the model (later probes start from it) and reported with the results
(`take_record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import torch
from torch import nn

from knowcomp.errors import KnowcompError

T = TypeVar("T")

# Padded tokens per batch on a CPU, per kind of loop, measured on 2 cores: decoder scoring is
# fastest with small batches (SmolLM2 PIQA 4.9 s at 512 against 6.1 s at 128 and 14.1 s at
# 8192); an encoder-decoder's shared-encoder batches are whole contexts with all their
# continuations and want larger ones (a Flan-T5-small-shaped T5 on BoolQ, PIQA and HellaSwag:
# 23.7 s of CPU at 8192, 28.7 s at 4096, 94.4 s at 512; BENCHMARKS.md, `bench_batch_tokens.py`);
# generation reads every weight once per step, whatever the batch.
CPU_BATCH_TOKENS = {"score": 512, "seq2seq": 8192, "generate": 2048}
# Accelerators: this when free memory is unknown (MPS), and the bounds of the CUDA estimate.
ACCELERATOR_BATCH_TOKENS = 16384
MIN_ACCELERATOR_BATCH_TOKENS = 2048
MAX_ACCELERATOR_BATCH_TOKENS = 131072
# Share of the free GPU memory one batch's activations may take (the rest: the allocator's
# fragmentation, the logits, what other processes allocate meanwhile).
FREE_MEMORY_SHARE = 0.25
KINDS = tuple(CPU_BATCH_TOKENS)


class OutOfMemory(KnowcompError):
    """One sequence alone does not fit the device's free memory."""


def check_batch_tokens(value: Any) -> int:
    """A user's batch budget, or a one-line error: a whole number of tokens, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KnowcompError(
            f"the batch budget must be a whole number of padded tokens, at least 1, got "
            f"{value!r}; e.g. 4096 (leave it unset for the device's default)"
        )
    return value


def default_batch_tokens(device: torch.device, kind: str = "score", model: Any = None) -> int:
    """The padded tokens per batch for `kind` ("score", "seq2seq" or "generate") on `device`.

    CPU: the measured best per kind. CUDA: a share of the free memory over an estimate of the
    activation bytes one token costs in `model` (`bytes_per_token`), within
    [MIN_ACCELERATOR_BATCH_TOKENS, MAX_ACCELERATOR_BATCH_TOKENS]; ACCELERATOR_BATCH_TOKENS when
    the free memory or the model's shape is unknown (MPS, a model without a config).
    """
    if kind not in CPU_BATCH_TOKENS:
        raise ValueError(f"unknown batch kind {kind!r}; one of {KINDS}")
    if device.type == "cpu":
        return CPU_BATCH_TOKENS[kind]
    free = free_memory(device)
    per_token = bytes_per_token(model, cache=kind == "generate") if model is not None else None
    if free is None or per_token is None:
        return ACCELERATOR_BATCH_TOKENS
    return scaled_budget(free, per_token)


def scaled_budget(free_bytes: int, per_token: int) -> int:
    """The budget for `free_bytes` of free memory at `per_token` activation bytes a token:
    FREE_MEMORY_SHARE of the memory, rounded down to a multiple of 512, within the bounds."""
    tokens = int(free_bytes * FREE_MEMORY_SHARE) // max(per_token, 1) // 512 * 512
    return max(MIN_ACCELERATOR_BATCH_TOKENS, min(MAX_ACCELERATOR_BATCH_TOKENS, tokens))


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (None elsewhere, or where the driver cannot say)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except RuntimeError:
        return None


def bytes_per_token(model: Any, *, cache: bool = False) -> int | None:
    """Activation bytes one token takes in a forward pass, estimated from the config.

    In inference each layer's activations are freed when the next layer runs, so the peak is
    one layer's widest moment: the hidden state and its residual copy, the query/key/value
    projections, and the feed-forward's up (and gate) projection, 4 x hidden + 3 x intermediate
    values, in the model's dtype. Attention scores are left out (SDPA and flash attention do
    not materialise them). With `cache` (generation), every layer also keeps the token's keys
    and values: 2 x layers x hidden more (an upper bound where heads share keys). None when
    the config does not name its sizes.
    """
    config = getattr(model, "config", None)
    hidden = _first(config, "hidden_size", "d_model", "n_embd", "dim")
    if hidden is None:
        return None
    inner = _first(config, "intermediate_size", "d_ff", "ffn_dim", "n_inner", "hidden_dim")
    inner = inner or 4 * hidden
    try:
        size = next(model.parameters()).element_size()
    except (StopIteration, AttributeError):
        size = 4
    layers = _first(config, "num_hidden_layers", "num_layers", "n_layer", "n_layers") or 0
    kept = 2 * layers * hidden if cache else 0
    return (4 * hidden + 3 * inner + kept) * size


def _first(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def is_out_of_memory(err: BaseException) -> bool:
    """Is `err` a device running out of memory (CUDA, MPS or the CPU allocator)?"""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)  # fmt: skip


# -- what a model's probes ran with ------------------------------------------------------------
@dataclass
class BatchRecord:
    """The budgets a model's loops started with since the last `take_record`, and where an
    out-of-memory error lowered them."""

    started: int | None = None  # the largest budget a loop started with
    lowered_to: int | None = None  # the smallest budget a back-off reached
    backoffs: list[str] = field(default_factory=list)
    scoring: float = 0.0  # seconds inside the loops' batches (the dry run's served share)


_RECORDS: WeakKeyDictionary[nn.Module, BatchRecord] = WeakKeyDictionary()
_CAPS: WeakKeyDictionary[nn.Module, int] = WeakKeyDictionary()  # budget after an OOM


def _record(model: nn.Module) -> BatchRecord:
    if model not in _RECORDS:
        _RECORDS[model] = BatchRecord()
    return _RECORDS[model]


def take_record(model: nn.Module) -> BatchRecord:
    """What `model`'s loops ran with since the last call (and start a new record)."""
    return _RECORDS.pop(model, None) or BatchRecord()


def describe_budgets(results: Sequence[dict[str, Any]], requested: int | None) -> str:
    """One line for a results store: each probe's starting budget (and where an out-of-memory
    error lowered it), and whether it was asked for or the device's default."""
    parts = []
    for result in results:
        options = result.get("options") or {}
        if "batch_tokens" in options:
            lowered = options.get("batch_tokens_after_oom")
            after = f" -> {lowered} after out of memory" if lowered else ""
            parts.append(f"{result['probe']} {options['batch_tokens']}{after}")
    source = "asked for (batch_tokens)" if requested else "the device's default"
    return f"{', '.join(parts) or 'none'} ({source})"


@contextmanager
def unrecorded(model: nn.Module) -> Iterator[None]:
    """Loops run meanwhile (knowcomp's own checks on a synthetic item) leave no record."""
    kept = _RECORDS.pop(model, None)
    try:
        yield
    finally:
        _RECORDS.pop(model, None)
        if kept is not None:
            _RECORDS[model] = kept


def budget_for(model: nn.Module, requested: int | None, kind: str = "score") -> int:
    """The budget a loop over `model` starts with: `requested`, else the device's default;
    never above what an earlier out-of-memory error on this model lowered it to."""
    device = next(model.parameters()).device
    budget = requested or default_batch_tokens(device, kind, model)
    if model in _CAPS:
        budget = min(budget, _CAPS[model])
    record = _record(model)
    record.started = max(record.started or 0, budget)
    return budget


def batches(lengths: Sequence[int], max_tokens: int, max_batch: int) -> Iterator[list[int]]:
    """Indices of sequences, longest first, in batches whose padded size fits `max_tokens`
    (a sequence longer than that gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= max_batch or longest * (len(batch) + 1) > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


Plan = Callable[[list[int], int], list[list[int]]]


def run_batches(
    model: nn.Module,
    lengths: Sequence[int],
    budget: int,
    run: Callable[[list[int]], Sequence[T]],
    *,
    max_batch: int = 128,
    plan: Plan | None = None,
    what: str = "sequence",
) -> list[T]:
    """`run(batch)` for every batch of indices into `lengths` (planned by `plan(indices,
    budget)`, by default `batches`, longest first), backing off on out-of-memory errors as
    the module says. Results come back in the order of `lengths`; `run` must return one
    result per index of its batch and report progress only once it has succeeded."""
    if plan is None:

        def plan(indices: list[int], tokens: int) -> list[list[int]]:
            chosen = [lengths[i] for i in indices]
            return [[indices[j] for j in b] for b in batches(chosen, tokens, max_batch)]

    results: list[T | None] = [None] * len(lengths)
    queue = plan(list(range(len(lengths))), budget)
    while queue:
        batch = queue.pop(0)
        start = time.perf_counter()
        try:
            done = run(batch)
        except Exception as err:
            _record(model).scoring += time.perf_counter() - start
            if not is_out_of_memory(err):
                raise
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
        else:
            _record(model).scoring += time.perf_counter() - start
            for i, result in zip(batch, done, strict=True):
                results[i] = result
            continue
        # Out of memory: the failed batch's tensors are gone with `err`; give the cache back.
        _empty_cache(model)
        padded = max(lengths[i] for i in batch) * len(batch)
        if len(batch) == 1:
            raise OutOfMemory(
                f"out of memory on {_device(model)} with a single {what} of {lengths[batch[0]]} "
                f"tokens ({message}); free memory on the device, run in bfloat16 (--dtype "
                "bfloat16), or spread the model over devices (--device-map auto)"
            )
        budget = max(1, min(budget, padded) // 2)
        _CAPS[model] = min(_CAPS.get(model, budget), budget)
        record = _record(model)
        record.lowered_to = min(record.lowered_to or budget, budget)
        record.backoffs.append(f"{padded} padded tokens did not fit ({message})")
        remaining = sorted({i for b in [batch, *queue] for i in b})
        queue = plan(remaining, budget)
    return results  # type: ignore[return-value]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _empty_cache(model: nn.Module) -> None:
    device = _device(model)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
