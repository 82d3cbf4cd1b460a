"""A key/value prefix that every forward of a decoder sees, without changing the model or the
probes.

Prompt tuning and prefix tuning both end as the same thing at inference: for each layer, keys
and values of `length` virtual tokens at positions 0..length-1, which every input token may
attend to. A soft prompt's keys and values do not depend on the input (it comes first and
attention is causal), so they are computed once, when the prefix is attached, not per batch.

`prefixed(model, provider)` installs a forward pre-hook on the model: on the first call for a
sequence (no cache yet) it passes the provider's cache as the model's key/value cache; on every
call it prepends `length` ones to a 2-D attention mask (or `length` open columns to a 4-D one) and
shifts explicit position ids by `length`. The probes' batching, packing, shared contexts and
KV-cache generation then run unchanged on the prompted model, and their logits cover the input
tokens only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from knowcomp.models.forward import cache_kwarg, output_cache

# kwargs of one forward call -> the cache of virtual tokens for that batch
CacheProvider = Callable[[dict], DynamicCache]


@dataclass
class KVPrefix:
    """Per layer, keys and values of shape [batch, kv_heads, length, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[-2]

    @classmethod
    def from_cache(cls, cache: DynamicCache) -> KVPrefix:
        layers = cache.layers
        return cls([layer.keys for layer in layers], [layer.values for layer in layers])

    def rows(self, batch: int) -> KVPrefix:
        """This (batch-1) prefix repeated for `batch` rows."""
        return KVPrefix([k.expand(batch, -1, -1, -1) for k in self.keys],
                        [v.expand(batch, -1, -1, -1) for v in self.values])  # fmt: skip

    def fill(self, cache: DynamicCache) -> DynamicCache:
        """Write the prefix into an empty cache (fresh tensors: the cache grows them later)."""
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            cache.update(k.contiguous().clone(), v.contiguous().clone(), layer)
        return cache


def extend_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """Open `length` leading key positions in a 2-D (0/1) or 4-D (bool or additive) mask."""
    if mask.dim() == 2:
        ones = torch.ones((mask.shape[0], length), dtype=mask.dtype, device=mask.device)
        return torch.cat([ones, mask], dim=1)
    shape = (*mask.shape[:-1], length)
    if mask.dtype == torch.bool:
        return torch.cat([torch.ones(shape, dtype=torch.bool, device=mask.device), mask], dim=-1)
    return torch.cat([torch.zeros(shape, dtype=mask.dtype, device=mask.device), mask], dim=-1)


def batch_size_of(kwargs: dict) -> int:
    inputs = kwargs.get("input_ids")
    if inputs is None:
        inputs = kwargs["inputs_embeds"]
    return inputs.shape[0]


class _PrefixHook:
    def __init__(
        self, model: nn.Module, provider: CacheProvider, length: int, shift: int | None = None
    ) -> None:
        self.model, self.provider, self.length = model, provider, length
        self.shift = length if shift is None else shift  # where the input's positions start
        self.busy = False  # the provider may run the model itself (IDP's selection pass)

    def __call__(self, _module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.busy:
            return None
        kwargs = dict(kwargs)
        if args:  # model(input_ids) called positionally
            kwargs["input_ids"], args = args[0], args[1:]
        # the cache under either name (callers differ across transformers releases), passed on
        # under the name the model takes
        given = [kwargs.pop(name, None) for name in ("cache", "past_key_values")]
        cache = next((c for c in given if c is not None), None)
        if cache is None or cache.get_seq_length() == 0:
            self.busy = True
            try:
                prefix = self.provider(kwargs)
            finally:
                self.busy = False
            if cache is None:
                cache = DynamicCache(config=self.model.config)
            cache = prefix.fill(cache)
            kwargs["use_cache"] = True  # a model given a cache with use_cache=False may drop it
        kwargs[cache_kwarg(self.model)] = cache
        mask = kwargs.get("attention_mask")
        if mask is not None:
            kwargs["attention_mask"] = extend_mask(mask, self.length)
        for name, shift in (("position_ids", self.shift), ("cache_position", self.length)):
            if kwargs.get(name) is not None:
                kwargs[name] = kwargs[name] + shift
        if kwargs.get("position_ids") is None and self.shift != self.length:
            # the model would count positions from the cache's length (the prefix's width)
            tokens = batch_tokens(kwargs)
            start = cache.get_seq_length() - self.length + self.shift
            device = cache.layers[0].keys.device
            kwargs["position_ids"] = torch.arange(start, start + tokens, device=device)[None]
        return args, kwargs


def batch_tokens(kwargs: dict) -> int:
    inputs = kwargs.get("input_ids")
    if inputs is None:
        inputs = kwargs["inputs_embeds"]
    return inputs.shape[1]


@contextmanager
def prefixed(
    model: nn.Module,
    provider: Callable[[dict], KVPrefix],
    length: int,
    shift: int | None = None,
) -> Iterator[nn.Module]:
    """While active, every forward of `model` runs after the provider's `length` virtual
    tokens, its own positions starting at `shift` (default: `length`)."""
    hook = _PrefixHook(model, provider, length, shift)
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()


def prompts_prefix(
    model: nn.Module, prompts: torch.Tensor | Sequence[torch.Tensor], end: int | None = None
) -> KVPrefix:
    """Keys and values of soft prompts (each [length, hidden]; or a tensor [m, length, hidden]),
    side by side ([1, heads, total length, d]), each as the model computes it alone: at
    positions 0..length-1, or, with `end`, at end-length..end-1 (ending where an input at
    position `end` starts). One prompt is prompt tuning's prefix; several are IDP's, computed in
    one pass with a block-diagonal causal mask so that no prompt sees another."""
    prompts = list(prompts)
    lengths = [p.shape[0] for p in prompts]
    device = next(model.parameters()).device
    embeds = torch.cat(prompts)[None].to(device=device, dtype=model.dtype)
    several = {}
    if len(prompts) > 1 or end is not None:
        allowed = torch.block_diag(*[torch.ones((n, n), dtype=torch.bool).tril() for n in lengths])
        bias = torch.zeros(allowed.shape, dtype=model.dtype)
        bias = bias.masked_fill_(~allowed, torch.finfo(model.dtype).min)[None, None]
        positions = torch.cat([torch.arange(n) + (0 if end is None else end - n) for n in lengths])
        several = {"attention_mask": bias.to(device), "position_ids": positions[None].to(device)}
    with torch.no_grad():  # the transformer only: no LM head is needed for keys and values
        out = model.base_model(inputs_embeds=embeds, use_cache=True, **several)
    return KVPrefix.from_cache(output_cache(out))
