"""Inference-time dynamic prompting (IDP, Hoang et al., ICML 2024).

`m` soft prompts, each trained alone, are kept side by side as one key/value cache: the model
runs once over all of them with a block-diagonal causal mask (no prompt attends to another)
and each prompt at positions 0..length-1, which gives exactly each prompt's own keys and values
(`knowcomp.recovery.prefix.prompts_prefix`). That cache is computed once, when IDP is
attached, and reused for every input.

Per input, a selection pass runs the input after all `m` prompts at once, reads the attention
of every input token (all layers and heads, padding left out) and sums it over each prompt's
keys; the prompt whose keys get the highest mean attention is chosen (`DynamicPrompts`). The
input then runs after the chosen prompt's keys and values alone, so its output equals running
that prompt by itself. The selection pass is a forward with eager attention, so IDP costs
about two forwards per input; `layers=N` reads only the first N layers' attention and stops
the selection pass there, which makes it about N / depth of a forward. `knowcomp recover`
reports the latency it measures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import DynamicCache

from knowcomp.recovery.prefix import KVPrefix, batch_size_of, prompts_prefix
from knowcomp.recovery.settings import RecoveryError


def prompt_slice(prefix: KVPrefix, prompts: int, chosen: torch.Tensor) -> KVPrefix:
    """Row b of the result holds prompt `chosen[b]`'s keys and values alone."""

    def pick(t: torch.Tensor) -> torch.Tensor:
        _, heads, width, dim = t.shape
        per_prompt = t[0].view(heads, prompts, width // prompts, dim)
        return per_prompt[:, chosen].permute(1, 0, 2, 3)

    return KVPrefix([pick(k) for k in prefix.keys], [pick(v) for v in prefix.values])


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Attention weights are only returned by eager attention: switch to it for a while."""
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def prompt_scores(
    attentions: tuple[torch.Tensor, ...], query_mask: torch.Tensor, prompts: int, length: int
) -> torch.Tensor:
    """[batch, prompts]: attention from the input tokens to each prompt's keys, averaged over
    layers, heads and real (mask 1) query positions."""
    weights = query_mask.to(attentions[0].dtype)  # [batch, tokens]
    total = torch.zeros((weights.shape[0], prompts), dtype=torch.float64, device=weights.device)
    for layer in attentions:  # [batch, heads, tokens, prompts*length + tokens]
        on_prompts = layer[..., : prompts * length].unflatten(-1, (prompts, length)).sum(-1)
        per_token = on_prompts.mean(dim=1)  # [batch, tokens, prompts]
        total += (per_token * weights[..., None]).sum(dim=1).double()
    return total / (weights.sum(dim=1, keepdim=True).double() * len(attentions))


@contextmanager
def first_blocks(model: nn.Module, layers: int) -> Iterator[None]:
    """While active, the model's stack of transformer blocks holds only its first `layers`
    (0: all), so a forward stops there; the blocks themselves are untouched."""
    from knowcomp.compress.layerwise import find_stacks

    stacks = find_stacks(model.base_model)
    if not layers or not stacks or layers >= len(stacks[-1].blocks):
        yield
        return
    path = stacks[-1].path  # a decoder's only stack (an encoder-decoder's decoder stack)
    parent_path, _, attribute = path.rpartition(".")
    parent = model.base_model.get_submodule(parent_path)
    full = getattr(parent, attribute)
    setattr(parent, attribute, nn.ModuleList(list(full)[:layers]))
    try:
        yield
    finally:
        setattr(parent, attribute, full)


class DynamicPrompts:
    """Chooses a prompt per input and returns the chosen prompts' keys and values."""

    def __init__(self, model: nn.Module, prompts: torch.Tensor, layers: int = 0) -> None:
        self.model, self.layers = model, layers
        self.count, self.length = prompts.shape[0], prompts.shape[1]
        self.prefix = prompts_prefix(model, prompts)
        self.choices = torch.zeros(self.count, dtype=torch.long)  # how often each was chosen

    def choose(self, kwargs: dict) -> torch.Tensor:
        """The chosen prompt of every row of this forward call's input."""
        if kwargs.get("input_ids") is None:
            raise RecoveryError(
                "IDP chooses prompts from input_ids; inputs_embeds are not supported"
            )
        ids = kwargs["input_ids"]
        batch, tokens = ids.shape
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise RecoveryError("IDP needs a 2-D attention mask (one sequence per input)")
        if mask is None:
            mask = torch.ones((batch, tokens), dtype=torch.long, device=ids.device)
        query_mask = mask[:, -tokens:]
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = torch.arange(tokens, device=ids.device).expand(batch, -1)
        width = self.count * self.length
        cache = self.prefix.rows(batch).fill(DynamicCache(config=self.model.config))
        ones = torch.ones((batch, width), dtype=mask.dtype, device=mask.device)
        # the transformer without its LM head: the choice needs attention weights only, and a
        # probe's hook on the head (scored positions only) must not see this pass
        with torch.no_grad(), eager_attention(self.model), first_blocks(self.model, self.layers):
            out = self.model.base_model(
                input_ids=ids, attention_mask=torch.cat([ones, mask], dim=1),
                position_ids=positions + self.length, past_key_values=cache,
                output_attentions=True, use_cache=True,
            )  # fmt: skip
        if not out.attentions or out.attentions[0] is None:
            raise RecoveryError(
                f"{type(self.model).__name__} returned no attention weights; IDP needs them"
            )
        chosen = prompt_scores(out.attentions, query_mask, self.count, self.length).argmax(-1)
        self.choices += torch.bincount(chosen.cpu(), minlength=self.count)
        return chosen

    def __call__(self, kwargs: dict) -> KVPrefix:
        chosen = self.choose(kwargs)
        assert len(chosen) == batch_size_of(kwargs)
        return prompt_slice(self.prefix, self.count, chosen)
