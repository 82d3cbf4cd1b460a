"""Inference-time dynamic prompting (IDP, Hoang et al., ICML 2024, sec. 3.1.1).

`m` soft prompts, each trained alone and possibly of different lengths, are kept side by side
as one key/value cache computed once, when IDP is attached: the model runs once over all of
them with a block-diagonal causal mask (no prompt attends to another), each prompt at the
positions that end where the input starts (`L - length .. L - 1`, with `L` the longest
prompt's length; the input then starts at position `L`). With rotary position embeddings
attention depends on relative positions only, so each prompt's keys and values, and the
input's attention to them, are the same as when that prompt alone precedes the input.

**Choice (the paper's score).** For each input and each prompt `i`, the score is the mean over
the entries of the attention block `A[Z_i : X]`: the attention probabilities from the input's
real (unpadded) tokens to prompt `i`'s tokens, averaged over those rows, those columns and the
heads. The probabilities are the softmax over all prompts' keys and the input's own keys, the
input's queries at its own positions. The prompt with the highest score is used.

**Where it is computed.** The choice is made inside the input's own forward, not in a pass of
its own: while IDP is attached, the model's attention goes through `idp_attention` (registered
with transformers' `AttentionInterface`). In the first layer that function takes the query and
the keys the layer has just computed (the prompts' from the cache), computes the score above and
chooses; from then on, in that layer and every later one, it hides the other prompts' columns
from the attention mask and calls transformers' SDPA attention. So each input sees only its
chosen prompt, in every layer, and its outputs equal running that prompt alone as a prefix.
The extra work is one explicit softmax in the first layer and attention over the hidden
columns (masked, so they change nothing); there is no second forward. The choice reads the
first layer's attention only, because a choice read from a later layer would come after
earlier layers had already attended to every prompt.

`layers=N` (N > 1, or 0 for all layers) instead chooses from the mean of the score over the
first N layers; that needs those layers to run with every prompt visible, so it runs a
selection pass over them first (stopped after layer N), then the input's forward with the
chosen prompt: about 1 + N / depth forwards. Transformers returns attention probabilities only
from eager attention, and SDPA (which the answer uses) does not expose them: `idp_attention`
computes them itself from the same query and keys. While IDP is attached the model's attention
is SDPA whatever it was before (eager, say); its own implementation is set again on detach.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from knowcomp.analysis.similarity import EAGER_VARIANTS
from knowcomp.models.forward import with_cache
from knowcomp.probes.engine import PER_SEQUENCE
from knowcomp.recovery.prefix import KVPrefix, prefixed, prompts_prefix
from knowcomp.recovery.settings import RecoveryError

ATTENTION = "knowcomp_idp"  # the name under which `idp_attention` is registered
ATTENTION_WITH_MAPS = "knowcomp_idp_maps"  # `idp_attention_with_maps`
CHOOSER = "_knowcomp_idp"  # attribute that ties an attention module to its chooser


def block_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    lengths: Sequence[int],
    query_mask: torch.Tensor,
) -> torch.Tensor:
    """[batch, prompts]: per prompt, the mean of the attention block A[Z_i : X] (real query
    rows x the prompt's key columns), averaged over heads. `key` starts with the prompts'
    columns, in `lengths` order; `mask` is the layer's 4-D attention mask (bool or additive)."""
    key = repeat_kv(key, query.shape[1] // key.shape[1])
    logits = (query.float() @ key.float().transpose(-1, -2)) * scaling
    if mask is not None:
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask.float()
    probs = logits.softmax(dim=-1).nan_to_num(0.0)  # [batch, heads, queries, keys]
    blocks = probs[..., : sum(lengths)].split(list(lengths), dim=-1)
    per_prompt = torch.stack([block.mean(dim=-1) for block in blocks], dim=-1).mean(dim=1)
    rows = query_mask.to(per_prompt.dtype)[..., None]  # [batch, queries, 1]
    return (per_prompt * rows).sum(dim=1) / rows.sum(dim=1).clamp(min=1)


def hide_columns(
    mask: torch.Tensor | None, keep: torch.Tensor, queries: int, keys: int
) -> torch.Tensor:
    """The layer's 4-D mask with the leading prompt columns not in `keep` [batch, width]
    closed (a missing mask is the causal one over `keys` keys)."""
    batch, width = keep.shape
    if mask is None:
        past = keys - queries
        allowed = torch.ones((queries, keys), dtype=torch.bool, device=keep.device)
        mask = allowed.tril(diagonal=past)[None, None].expand(batch, 1, -1, -1)
    closed = ~keep[:, None, None, :]
    head = mask[..., :width]
    if mask.dtype == torch.bool:
        head = head & ~closed
    else:
        head = head.masked_fill(closed, torch.finfo(mask.dtype).min)
    return torch.cat([head, mask[..., width:]], dim=-1)


def idp_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
):
    """Transformers' SDPA attention, with the IDP choice of the module's chooser (if any)."""
    attention_mask = _chosen_mask(module, query, key, attention_mask, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def idp_attention_with_maps(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
):
    """`idp_attention` that also returns the attention maps (what eager attention returns), for
    layer-wise similarity: the output is SDPA's, so the model computes exactly what it does
    under IDP; the maps are the softmax of the same masked scores."""
    attention_mask = _chosen_mask(module, query, key, attention_mask, kwargs)
    output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    keys = repeat_kv(key, query.shape[1] // key.shape[1])
    scores = query @ keys.transpose(2, 3) * _scaling(query, kwargs)
    mask = attention_mask
    if mask is None and query.shape[2] > 1 and getattr(module, "is_causal", True):
        q_len, k_len = query.shape[2], keys.shape[2]
        rows = torch.arange(q_len, device=query.device)[:, None] + (k_len - q_len)
        mask = torch.arange(k_len, device=query.device)[None, :] <= rows
    if mask is not None:
        mask = mask[..., : keys.shape[2]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else (
            scores + mask)  # fmt: skip
    return output, torch.softmax(scores.float(), dim=-1).to(query.dtype)


def _chosen_mask(module: nn.Module, query, key, attention_mask, kwargs: dict):
    chooser = getattr(module, CHOOSER, None)
    if chooser is None:
        return attention_mask
    return chooser.in_layer(module, query, key, attention_mask, _scaling(query, kwargs))


def _scaling(query: torch.Tensor, kwargs: dict) -> float:
    """The attention's score scale: the module's own, else 1/sqrt(head dim) as SDPA uses."""
    return kwargs.get("scaling") or query.shape[-1] ** -0.5


AttentionInterface.register(ATTENTION, idp_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
AttentionInterface.register(ATTENTION_WITH_MAPS, idp_attention_with_maps)
AttentionMaskInterface.register(ATTENTION_WITH_MAPS, sdpa_mask)
EAGER_VARIANTS[ATTENTION] = ATTENTION_WITH_MAPS  # what layer-wise similarity switches IDP to


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


def has_rotary_positions(model: nn.Module) -> bool:
    """Whether positions enter only through rotary embeddings (attention then depends on
    relative positions only)."""
    return any("rotary" in type(m).__name__.lower() for m in model.modules())


class DynamicPrompts:
    """IDP's prompts on one model: the cache provider for `prefixed`, and the choice that
    `idp_attention` makes and applies in every layer."""

    def __init__(self, model: nn.Module, prompts: Sequence[torch.Tensor], layers: int = 1) -> None:
        self.model, self.layers = model, layers
        self.lengths = [p.shape[0] for p in prompts]
        self.count, self.width, self.length = len(prompts), sum(self.lengths), max(self.lengths)
        if len(set(self.lengths)) > 1 and not has_rotary_positions(model):
            raise RecoveryError(
                f"IDP with prompts of different lengths ({'+'.join(map(str, self.lengths))}) "
                f"needs rotary position embeddings, which {type(model).__name__} does not use; "
                "train prompts of one length (idp:tokens=L:prompts=N)"
            )
        self.prefix = prompts_prefix(model, prompts, end=self.length)
        self.choices = torch.zeros(self.count, dtype=torch.long)  # how often each was chosen
        self.last_chosen: torch.Tensor | None = None  # the last batch's prompt per row
        self.keep: torch.Tensor | None = None  # [batch, width]: the chosen prompt's columns
        self.query_mask: torch.Tensor | None = None  # the real tokens of the input being chosen for
        self.pending = False  # a choice is due in the next first layer
        self.collecting = False  # in a selection pass: sum each layer's scores
        self.totals: torch.Tensor | None = None
        self.seen = 0

    def __call__(self, kwargs: dict) -> KVPrefix:
        """At the start of a sequence: every prompt's keys and values for this batch, and the
        choice set up (made here by a selection pass, or due in the first layer)."""
        ids = kwargs.get("input_ids")
        if ids is None:
            raise RecoveryError(
                "IDP chooses prompts from input_ids; inputs_embeds are not supported"
            )
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise RecoveryError("IDP needs a 2-D attention mask (one sequence per input)")
        batch, tokens = ids.shape
        if mask is None:
            mask = torch.ones((batch, tokens), dtype=torch.long, device=ids.device)
        self.query_mask, self.keep = mask[:, -tokens:], None
        if self.layers == 1:
            self.pending = True
        else:
            self._selection_pass(ids, mask, kwargs.get("position_ids"))
        return self.prefix.rows(batch)

    def _selection_pass(self, ids: torch.Tensor, mask: torch.Tensor, positions) -> None:
        """`layers` != 1: the first `layers` blocks over the input after every prompt."""
        batch, tokens = ids.shape
        if positions is None:
            positions = torch.arange(tokens, device=ids.device).expand(batch, -1)
        cache = self.prefix.rows(batch).fill(DynamicCache(config=self.model.config))
        ones = torch.ones((batch, self.width), dtype=mask.dtype, device=mask.device)
        self.totals, self.seen, self.collecting = None, 0, True
        try:
            # the transformer without its LM head, which a probe's hook may watch
            with torch.no_grad(), first_blocks(self.model, self.layers):
                base = self.model.base_model
                base(input_ids=ids, attention_mask=torch.cat([ones, mask], dim=1),
                     position_ids=positions + self.length, **with_cache(base, cache),
                     use_cache=True)  # fmt: skip
            if not self.seen:
                raise RecoveryError(self._unreached())
            self._choose(self.totals / self.seen)
        finally:
            self.totals, self.collecting = None, False

    def in_layer(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        mask: torch.Tensor | None,
        scaling: float,
    ) -> torch.Tensor | None:
        """Called by `idp_attention` in every layer: choose where due, then the mask that
        shows each row its chosen prompt only."""
        if self.collecting:
            scores = block_scores(query, key, mask, scaling, self.lengths, self.query_mask)
            self.totals = scores if self.totals is None else self.totals + scores
            self.seen += 1
            return mask  # a selection pass: every prompt visible
        if self.pending:
            if getattr(module, "layer_idx", 0) != 0:
                raise RecoveryError(self._unreached())
            self._choose(block_scores(query, key, mask, scaling, self.lengths, self.query_mask))
        if self.keep is None:
            return mask
        if self.keep.shape[0] != query.shape[0]:
            raise RecoveryError(
                "IDP chose prompts for a batch of another size; a sequence must keep its batch"
            )
        return hide_columns(mask, self.keep, query.shape[2], key.shape[2])

    def _choose(self, scores: torch.Tensor) -> None:
        chosen = scores.argmax(dim=-1)
        self.choices += torch.bincount(chosen.cpu(), minlength=self.count)
        starts = torch.tensor([0, *self.lengths[:-1]]).cumsum(0)
        columns = torch.arange(self.width)
        first, last = starts[chosen.cpu()], starts[chosen.cpu()] + torch.tensor(self.lengths)[
            chosen.cpu()]  # fmt: skip
        keep = (columns[None] >= first[:, None]) & (columns[None] < last[:, None])
        self.keep, self.pending = keep.to(scores.device), False
        self.last_chosen = chosen

    def _unreached(self) -> str:
        return (
            f"IDP's choice was not made: {type(self.model).__name__}'s first attention layer "
            "does not run through transformers' attention interface"
        )

    @contextmanager
    def installed(self) -> Iterator[None]:
        """While active, the model's attention is `idp_attention` with this chooser, and the
        probes score every request as its own sequence (the prompt depends on the whole
        input)."""
        model = self.model
        before = model.config._attn_implementation
        marked = [m for m in model.modules() if hasattr(m, "layer_idx") and m is not model]
        handle = model.register_forward_hook(self._check_chosen)
        model.set_attn_implementation(ATTENTION)
        if model.config._attn_implementation != ATTENTION:
            handle.remove()
            raise RecoveryError(
                f"IDP cannot run in {type(model).__name__}: its attention is not set through "
                "transformers' attention interface"
            )
        for module in marked:
            setattr(module, CHOOSER, self)
        setattr(model, PER_SEQUENCE, True)
        try:
            with prefixed(model, self, self.width, shift=self.length):
                yield
        finally:
            handle.remove()
            delattr(model, PER_SEQUENCE)
            for module in marked:
                delattr(module, CHOOSER)
            model.set_attn_implementation(before)

    def _check_chosen(self, _module: nn.Module, _args, _output) -> None:
        if self.pending:
            self.pending = False
            raise RecoveryError(self._unreached())


def load_prompts(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """IDP's prompts from its saved tensors: `prompt.0`, `prompt.1`, ... ([length, hidden]
    each), or an older file's `prompts` [m, length, hidden]."""
    if "prompts" in tensors:
        return list(tensors["prompts"].unbind(0))
    return [tensors[f"prompt.{i}"] for i in range(len(tensors))]
