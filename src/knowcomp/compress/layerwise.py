"""Run a model block by block on calibration tokens, so each layer can be compressed from the
inputs it sees, with memory that does not grow with depth.

The blocks are found without naming any architecture: a *stack* is an `nn.ModuleList` of two or
more modules of one class (the outermost such list: decoder layers, encoder layers, T5 blocks),
kept only if a trial forward calls each of its blocks exactly once, in order. For a stack with
target layers:

1. one forward per batch records the input of the first targeted block and the other
   arguments of every block (masks, position embeddings, T5's position bias, cross-attention
   states) with pre-hooks, and stops at the last targeted block; where a trial forward shows
   that every block gets the very same arguments (most decoders), it stops at the first;
2. block by block, forward hooks on the block's target layers accumulate statistics of their
   inputs, the layers are compressed, and the block is run again with the compressed weights
   to give the next block its input.

Stacks run in execution order, so the decoder of an encoder-decoder model sees the compressed
encoder. Layers outside every stack (the LM head, poolers, ALBERT's shared layer) are handled
last, from one full forward of the partly compressed model with hooks on them.

Only one block's statistics and one copy of the hidden states ([nsamples, seqlen, hidden])
are alive at a time. Layers that read the same input tensor (Q, K and V; gate and up) share
one accumulator.

`compress` runs on one thread: GPTQ and SparseGPT are thousands of small column updates, where
synchronising two threads costs more than it gains (on a busy 2-core machine GPTQ of one
576 x 1536 layer took 15 s on two threads and 1.5 s on one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from knowcomp.models.family import Family
from knowcomp.models.forward import forward_kwargs

Statistic = Literal["hessian", "input_norm"]
CompressFn = Callable[[str, "InputStats"], None]
TOKENS_PER_BATCH = 4096


class InputStats:
    """Running statistics of the inputs one linear layer saw: `hessian` (the mean of x xᵀ,
    float64) or the squared norm of each input feature over all tokens."""

    def __init__(self, in_features: int, statistic: Statistic) -> None:
        self.statistic = statistic
        self.in_features = in_features
        self.tokens = 0
        shape = (in_features, in_features) if statistic == "hessian" else (in_features,)
        self._sum = torch.zeros(shape, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if self.statistic == "hessian":
            self._sum += (x.T @ x).to(device="cpu", dtype=torch.float64)
        else:
            self._sum += (x * x).sum(0).to(device="cpu", dtype=torch.float64)
        self.tokens += x.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """E[x xᵀ] over every token seen (zeros if the layer never ran)."""
        if self.statistic != "hessian":
            raise ValueError("these statistics hold input norms, not a Hessian")
        return self._sum / max(self.tokens, 1)

    @property
    def input_norms(self) -> torch.Tensor:
        """‖x_j‖₂ over every token seen, per input feature."""
        if self.statistic == "hessian":
            return self._sum.diagonal().clamp_min(0).sqrt()
        return self._sum.clamp_min(0).sqrt()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread, then restore the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Stop(Exception):
    """Raised by a hook to end a forward early."""


@dataclass
class _Call:
    """The arguments a block was called with, its hidden states taken out."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    hidden_in_kwargs: bool

    @classmethod
    def of(cls, args: tuple, kwargs: dict) -> tuple[_Call, torch.Tensor]:
        if args:
            return cls(tuple(args[1:]), dict(kwargs), False), args[0]
        kwargs = dict(kwargs)
        return cls((), kwargs, True), kwargs.pop("hidden_states")

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.hidden_in_kwargs:
            out = block(*self.args, hidden_states=hidden, **self.kwargs)
        else:
            out = block(hidden, *self.args, **self.kwargs)
        return out if isinstance(out, torch.Tensor) else out[0]


@dataclass
class Stack:
    path: str
    blocks: nn.ModuleList
    targets: dict[int, list[str]] = field(default_factory=dict)  # block index -> layer names
    shared_arguments: bool = False  # every block gets its first block's masks, positions...


def find_stacks(model: nn.Module) -> list[Stack]:
    """The outermost ModuleLists of two or more modules of one class, in registration order."""
    stacks: list[Stack] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if any(name.startswith(s.path + ".") for s in stacks):
            continue
        stacks.append(Stack(name, module))
    return stacks


def model_forward(model: nn.Module, family: Family, ids: torch.Tensor) -> Any:
    """One forward of any family on token ids (the decoder reads the same ids)."""
    return model(**forward_kwargs(family, ids))


def _batches(tokens: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    size = max(1, TOKENS_PER_BATCH // tokens.shape[1])
    return [b.to(device) for b in tokens.split(size)]


def _same(a: Any, b: Any) -> bool:
    """The very same argument: one tensor object, or equal plain values, element by element."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # an object without a usable ==: not provably the same
        return False


def _trial(model: nn.Module, family: Family, stacks: list[Stack], probe: torch.Tensor):
    """One short forward: keep the stacks whose blocks each run once, in order, sorted by when
    they first run; mark those whose blocks all get the same arguments as their first block."""
    calls: list[tuple[int, int, _Call]] = []

    def hook(s: int, i: int):
        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            calls.append((s, i, _Call.of(args, kwargs)[0]))

        return record

    hooks = [
        block.register_forward_pre_hook(hook(s, i), with_kwargs=True)
        for s, stack in enumerate(stacks)
        for i, block in enumerate(stack.blocks)
    ]
    try:
        model_forward(model, family, probe)
    finally:
        for h in hooks:
            h.remove()
    ordered = []
    for s, stack in enumerate(stacks):
        seen = [(i, call) for t, i, call in calls if t == s]
        if [i for i, _ in seen] != list(range(len(stack.blocks))):
            continue
        first = seen[0][1]
        stack.shared_arguments = all(
            _same(call.args, first.args) and _same(call.kwargs, first.kwargs) for _, call in seen
        )
        position = next(n for n, (t, _, _) in enumerate(calls) if t == s)
        ordered.append((position, stack))
    return [stack for _, stack in sorted(ordered, key=lambda pair: pair[0])]


class _Collector:
    """Forward hooks that feed each target layer's inputs into its InputStats; layers that
    read the very same input tensor in the first batch share one accumulator."""

    def __init__(self, modules: dict[str, nn.Module], statistic: Statistic) -> None:
        self.modules = modules
        self.statistic = statistic
        self.stats: dict[str, InputStats] = {}
        self.alias: dict[str, str] = {}
        self._seen: dict[tuple, tuple[torch.Tensor, str]] = {}
        self._first_batch = True
        self._hooks = [
            module.register_forward_hook(self._hook(name)) for name, module in modules.items()
        ]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = args[0]
            if name in self.alias:
                return
            key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype)
            if self._first_batch and key in self._seen and name not in self.stats:
                self.alias[name] = self._seen[key][1]
                return
            self._seen[key] = (x, name)  # holding x keeps its memory from being reused
            if name not in self.stats:
                self.stats[name] = InputStats(x.shape[-1], self.statistic)
            self.stats[name].add(x)

        return hook

    def end_batch(self) -> None:
        self._seen.clear()
        self._first_batch = False

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def stats_of(self, name: str) -> InputStats:
        name = self.alias.get(name, name)
        if name not in self.stats:  # the layer never ran on the calibration text
            module = self.modules[name]
            in_features = getattr(module, "in_features", None) or module.weight.shape[0]
            return InputStats(in_features, self.statistic)
        return self.stats[name]


def calibrate_layers(
    model: nn.Module,
    family: Family,
    names: Sequence[str],
    statistic: Statistic,
    tokens: torch.Tensor,
    compress: CompressFn,
) -> None:
    """Call `compress(name, stats)` for every layer in `names`, each with statistics of its
    inputs in the model as compressed so far (blocks in execution order)."""
    device = next(model.parameters()).device
    batches = _batches(tokens, device)
    stacks = _trial(model, family, find_stacks(model), batches[0][:1, :8])
    outside = []
    for name in names:
        stack = next((s for s in stacks if name.startswith(s.path + ".")), None)
        if stack is None:
            outside.append(name)
            continue
        index = int(name[len(stack.path) + 1 :].split(".")[0])
        stack.targets.setdefault(index, []).append(name)
    for stack in stacks:
        if stack.targets:
            _run_stack(model, family, stack, batches, statistic, compress)
    if outside:
        modules = {name: model.get_submodule(name) for name in outside}
        collector = _Collector(modules, statistic)
        try:
            for batch in batches:
                model_forward(model, family, batch)
                collector.end_batch()
        finally:
            collector.remove()
        with one_thread():
            for name in outside:
                compress(name, collector.stats_of(name))


def _run_stack(
    model: nn.Module,
    family: Family,
    stack: Stack,
    batches: list[torch.Tensor],
    statistic: Statistic,
    compress: CompressFn,
) -> None:
    first, last = min(stack.targets), max(stack.targets)
    hidden, calls = _capture(model, family, stack, first, last, batches)
    for i in range(first, last + 1):
        block = stack.blocks[i]
        names = stack.targets.get(i, [])
        if names:
            collector = _Collector({n: model.get_submodule(n) for n in names}, statistic)
            try:
                for b, h in enumerate(hidden):
                    calls[i][b].run(block, h)
                    collector.end_batch()
            finally:
                collector.remove()
            with one_thread():
                for name in names:
                    compress(name, collector.stats_of(name))
        if i < last:
            hidden = [calls[i][b].run(block, h) for b, h in enumerate(hidden)]
        calls[i] = []  # this block's arguments are no longer needed


def _capture(
    model: nn.Module,
    family: Family,
    stack: Stack,
    first: int,
    last: int,
    batches: list[torch.Tensor],
) -> tuple[list[torch.Tensor], dict[int, list[_Call]]]:
    """The hidden states entering block `first`, and the arguments of blocks first..last,
    one entry per batch. Where every block gets the same arguments (most decoders), the
    forward stops at block `first`; otherwise it records each block's own, up to `last`."""
    hidden: list[torch.Tensor] = []
    stop_at = first if stack.shared_arguments else last
    calls: dict[int, list[_Call]] = {i: [] for i in range(first, stop_at + 1)}

    def pre_hook(i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            call, h = _Call.of(args, kwargs)
            calls[i].append(call)
            if i == first:
                hidden.append(h)
            if i == stop_at:
                raise _Stop

        return hook

    hooks = [
        stack.blocks[i].register_forward_pre_hook(pre_hook(i), with_kwargs=True)
        for i in range(first, stop_at + 1)
    ]
    try:
        for batch in batches:
            with suppress(_Stop):
                model_forward(model, family, batch)
    finally:
        for hook in hooks:
            hook.remove()
    if stack.shared_arguments:
        calls.update({i: calls[first] for i in range(first + 1, last + 1)})
    return hidden, calls
