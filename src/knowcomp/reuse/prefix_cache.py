"""States a baseline run computed, kept so that trials changing only what comes after them
start from there instead of running the whole network again.

While the baseline (uncompressed) trial runs, `PrefixCache` records, for every scoring forward
of the probe engine (`engine.head_logits`), the LM head's input at the scored positions, and
for encoder-decoders every encoder output (`engine.encoder_states`). Each entry is keyed by a
digest of everything that determines it: the forward's input tensors, the scored positions and
the extra key the call site gives. A trial that changes only the head (`Reuse.HEAD`) then gets
the head applied to the kept inputs, with the same (1, n, hidden) shape the plain path feeds
it, so its logits are the plain path's bit for bit; a trial that leaves an encoder-decoder's
encoder untouched (`Reuse.ENCODER`) gets the kept encoder outputs and runs the decoder for
real. A forward whose key was not recorded (other items, another batch split) runs the plain
path, so a miss costs time, never correctness.

A miss also fills the cache, at no extra forward: what a serving trial computes before its
first change is still the baseline's. A head-only trial's miss keeps the head's input (and an
encoder-decoder's encoder output); a decoder-only trial's miss keeps the encoder output. So a
study resumed after its baseline was stored (or whose baseline came from the baseline cache)
needs no extra baseline pass: its first reuse-able trial runs whole and keeps the states, the
next ones reuse them. That is cheaper than recording first, which costs one extra baseline
evaluation on top of the same trials (docs/studies.md, "prefix reuse").

Head inputs are kept only for a model whose logits are its head's output: the first recorded
forward checks that (`head.head_is_final`); a model that soft-caps or scales its logits after
the head (Gemma 2, Cohere) keeps none, and its head-only trials run the whole network.

Not reused: decoder generation (greedy answers) and the key/value-cache path of decoders
that cannot pack (`engine.score_shared_context`). A changed head changes the generated tokens
and so every later step's input; those run in full. Encoder-decoder generation does reuse its
encoder outputs (the decoder generates for real).

The cache holds at most `budget` bytes. A recording that would pass it drops everything and
stops; the trials then run the plain path, and the results carry one note saying so.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from knowcomp.probes import engine
from knowcomp.reuse.changes import ChangePoint, Reuse
from knowcomp.reuse.head import head_is_final

DEFAULT_BUDGET_MB = 1024
# A head with at least this share of its vocabulary rows all zero is served from its other
# rows only (`PrefixCache._served_head`), for at least this many positions at a time.
LIVE_MIN_ZEROS = 0.05
LIVE_MIN_POSITIONS = 16
RECORD = "record"


def digest(tag: str, named: list[tuple[str, Any]]) -> bytes:
    """A 16-byte digest of tensors (shape, dtype and bytes) and plain values, by name."""
    h = hashlib.blake2b(tag.encode(), digest_size=16)
    for name, value in named:
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{tuple(value.shape)}{value.dtype}".encode())
            h.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, BaseModelOutput):
            continue  # an encoder output is keyed by the inputs behind it (`key`)
        else:
            h.update(repr(value).encode())
    return h.digest()


class PrefixCache:
    """A baseline run's head inputs and encoder outputs, per scoring forward, for later trials.

    `recording(model)` while the baseline runs; `serving(model, point)` while a trial runs.
    `held` is the memory kept per probe (bytes), filled as `probe(name)` sections record.
    """

    def __init__(self, budget: int = DEFAULT_BUDGET_MB * 2**20) -> None:
        self.budget = budget
        self._heads: dict[bytes, torch.Tensor] = {}
        self._encoder: dict[bytes, torch.Tensor] = {}
        self.held: dict[str, int] = {}
        self.over_budget = False
        self.hits = 0
        self.misses = 0
        self.filled: dict[str, int] = {}  # bytes a serving trial kept on its misses, by kind
        self.head_final: bool | None = None  # the model's logits are its head's output (checked)
        self._mode: Reuse | str | None = None
        self._live: tuple | None = None  # (weight ref, its state, `_live_rows`) last found
        self._probe = ""

    @property
    def bytes(self) -> int:
        return sum(self.held.values())

    @property
    def empty(self) -> bool:
        return not (self._heads or self._encoder)

    # -- attaching ------------------------------------------------------------------------
    @contextmanager
    def _attached(self, model: nn.Module, mode: Reuse | str) -> Iterator[PrefixCache]:
        setattr(model, engine.PREFIX_CACHE, self)
        self._mode, self.hits, self.misses, self.filled = mode, 0, 0, {}
        try:
            yield self
        finally:
            delattr(model, engine.PREFIX_CACHE)
            self._mode = None

    def recording(self, model: nn.Module) -> Any:
        """While active, the engine's forwards on `model` (uncompressed) are kept."""
        return self._attached(model, RECORD)

    def serving(self, model: nn.Module, point: ChangePoint) -> Any:
        """While active, forwards on `model` reuse what `point` allows of the kept states."""
        return self._attached(model, point.reuse)

    @contextmanager
    def probe(self, name: str) -> Iterator[None]:
        """Count what is recorded inside as `name`'s memory."""
        self._probe = name
        try:
            yield
        finally:
            self._probe = ""

    # -- what the engine calls ------------------------------------------------------------
    def head_logits(
        self,
        model: nn.Module,
        rows: torch.Tensor,
        cols: torch.Tensor,
        kwargs: dict,
        key: tuple[torch.Tensor, ...],
        late: Callable[[], dict] | None = None,
    ) -> torch.Tensor:
        """`engine.head_logits` with this cache: replayed, recorded or plain (`late`: forward
        arguments that follow from `kwargs` and `key`, built only for a forward that runs)."""
        named = [*sorted(kwargs.items()), ("rows", rows), ("cols", cols),
                 *((f"key{i}", k) for i, k in enumerate(key))]  # fmt: skip
        name = digest("head", named)
        if self._mode is Reuse.HEAD and name in self._heads:
            self.hits += 1
            return self._served_head(model.get_output_embeddings(), self._heads[name])
        if self._mode is not RECORD:
            self.misses += self._mode is Reuse.HEAD
        if late is not None:
            kwargs = kwargs | late()
        kwargs = self._with_encoder(model, kwargs)
        captured: list[torch.Tensor] = []
        hook = None
        if self._mode in (RECORD, Reuse.HEAD):  # a head-only trial's head input is the baseline's
            head = model.get_output_embeddings()
            hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        try:
            with engine.head_only_at(model, rows, cols):
                logits = model(**kwargs).logits[0]
        finally:
            if hook is not None:
                hook.remove()
        if captured:
            if self.head_final is None:  # once: soft-capping or scaling after the head?
                self.head_final = head_is_final(head, captured[0], logits)
            if self.head_final:
                self._keep(self._heads, name, captured[0][0].clone())
        return logits

    def _served_head(self, head: nn.Module, states: torch.Tensor) -> torch.Tensor:
        """The head's logits on kept `states` (n, H). Where whole vocabulary rows of a plain
        linear head are zero (`ln_structured` on the final layer), the product runs over the
        other rows only and is copied into a tensor of zeros: the same logits (a linear
        head's zero rows give exactly 0; the live rows' products equal the full product's
        rows bit for bit on the CPU here, checked for 16 to 79 positions and up to 300, 10% to
        90% of SmolLM2-sized rows pruned, but not for 1 or 4 to 15 positions, so fewer than
        `LIVE_MIN_POSITIONS` run the whole head, cheap at that size). Another BLAS may round
        the smaller product differently: within float rounding, which the issue's 1e-5
        allows."""
        live = self._live_rows(head) if len(states) >= LIVE_MIN_POSITIONS else None
        if live is None:
            return head(states.unsqueeze(0))[0]
        rows, weight = live
        values = nn.functional.linear(states.unsqueeze(0), weight)[0]
        logits = values.new_zeros((len(states), head.weight.shape[0]))
        return logits.index_copy_(1, rows, values)

    def _live_rows(self, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids, weight rows) of the vocabulary rows that are not all zero, for a bias-free
        `nn.Linear` head with at least `LIVE_MIN_ZEROS` of its rows all zero; None otherwise.
        Found once per state of the weight: the same tensor (a weak reference, so a new one
        at the same address is not taken for it) at the same version (restoring the weights
        copies into them, which counts; an untied head is a new tensor per compression).
        A first look at every 8th row's first 64 weights stops an unpruned or unstructured
        head cheaply (it only decides whether to look further: the rows used are those of
        the whole check)."""
        if type(head) is not nn.Linear or head.bias is not None:
            return None
        weight = head.weight
        state = (weight.data_ptr(), weight._version, tuple(weight.shape))
        if self._live is not None and self._live[0]() is weight and self._live[1] == state:
            return self._live[2]
        found = None
        vocab = weight.shape[0]
        least = LIVE_MIN_ZEROS * vocab
        sample = weight[::8, :64]  # every 8th row's first 64 weights: a cheap first look
        if int((~sample.ne(0).any(dim=1)).sum()) >= least / 8 / 2:
            low, high = torch.aminmax(weight, dim=1)
            alive = (low != 0) | (high != 0)  # NaN counts as alive
            if vocab - int(alive.sum()) >= least:
                rows = alive.nonzero()[:, 0]
                found = (rows, weight.index_select(0, rows))
        self._live = (weakref.ref(weight), state, found)
        return found

    def encoder_states(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """`engine.encoder_states` with this cache: replayed, recorded or plain."""
        name = digest("encoder", [("input_ids", input_ids), ("attention_mask", attention_mask)])
        if self._mode in (Reuse.HEAD, Reuse.ENCODER) and name in self._encoder:
            self.hits += self._mode is Reuse.ENCODER
            return self._encoder[name]
        if self._mode is Reuse.ENCODER:
            self.misses += 1
        states = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        states = states.last_hidden_state
        if self._mode in (RECORD, Reuse.HEAD, Reuse.ENCODER):  # the encoder is the baseline's
            self._keep(self._encoder, name, states.clone())
        return states

    def _with_encoder(self, model: nn.Module, kwargs: dict) -> dict:
        """An encoder-decoder forward given `input_ids` gets its encoder output from
        `encoder_states` instead (what the model would compute itself), so that it is kept or
        reused."""
        if "decoder_input_ids" not in kwargs or "input_ids" not in kwargs:
            return kwargs
        rest = {k: v for k, v in kwargs.items() if k != "input_ids"}
        states = self.encoder_states(model, kwargs["input_ids"], kwargs["attention_mask"])
        return rest | {"encoder_outputs": BaseModelOutput(last_hidden_state=states)}

    def _keep(self, store: dict[bytes, torch.Tensor], name: bytes, value: torch.Tensor) -> None:
        if self.over_budget or name in store:
            return
        size = value.numel() * value.element_size()
        if self.bytes + size > self.budget:
            self.over_budget = True
            self._heads.clear()
            self._encoder.clear()
            self.held.clear()
            return
        store[name] = value
        self.held[self._probe] = self.held.get(self._probe, 0) + size
        if self._mode != RECORD:
            kind = "head inputs" if store is self._heads else "encoder outputs"
            self.filled[kind] = self.filled.get(kind, 0) + size

    # -- what a result says ---------------------------------------------------------------
    def budget_note(self) -> str:
        return (
            f"prefix cache: the baseline's states passed the {self.budget / 2**20:.0f} MB "
            "budget and were dropped; trials run the whole network (raise the reuse budget)"
        )

    def served_note(self, point: ChangePoint) -> str | None:
        """What a trial's probe reused and kept on its misses, or None if neither."""
        if self.over_budget:
            return self.budget_note()
        if point.reuse is Reuse.HEAD and self.head_final is False:
            return ("prefix reuse: none, the model transforms its head's output (logit "
                    "soft-capping or scaling), so trials run the whole network")  # fmt: skip
        kept = ""
        if self.filled:
            states = " and ".join(self.filled)
            kept = (f"{sum(self.filled.values()) / 2**20:.1f} MB of the baseline's {states}, "
                    "computed by this trial before its first change, kept for later "
                    "trials")  # fmt: skip
        if not self.hits:
            return f"prefix reuse: nothing kept yet; {kept}" if kept else None
        what = ("the LM head on the baseline's final hidden states"
                if point.reuse is Reuse.HEAD else "the baseline's encoder outputs")  # fmt: skip
        total = self.hits + self.misses
        note = f"prefix reuse: {what} for {self.hits} of {total} forwards ({point.describe()})"
        return f"{note}; {kept}" if kept else note

    def held_note(self, probe: str) -> str:
        return f"prefix cache: {self.held.get(probe, 0) / 2**20:.1f} MB kept for later trials"
