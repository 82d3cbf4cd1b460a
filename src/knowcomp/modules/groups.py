"""Module groups from generic rules over module names and types.

Every linear layer gets a role. Rules, in order:
- `final_layer`: the module returned by `model.get_output_embeddings()` (the LM head).
- attention: some ancestor's attribute or class name mentions attention (`attn`, `Attention`);
  cross-attention when an ancestor mentions `cross`, `encdec` or `encoder_attn`.
- feed_forward: any other linear layer inside a repeated block (a numbered path component).
- other: the rest (poolers, masked-LM head transforms, ALBERT's embedding projection); part of
  `overall`, shown as its own row so the counts add up.
The encoder / decoder stack of an encoder-decoder model comes from `model.get_encoder()`.
No architecture is named anywhere, so a new transformers architecture works unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

from knowcomp.errors import GroupError
from knowcomp.models.family import Family
from knowcomp.modules.layers import bias_numel, is_linear, weight_shape

Role = Literal["attention", "feed_forward", "other", "final_layer"]

GROUP_DESCRIPTIONS: dict[str, str] = {
    "attention": "Q, K, V and output projections of every attention block (self and cross)",
    "attention_qkv": "Q, K and V without the output projection (the original study's BERT code)",
    "self_attention": "self-attention projections",
    "cross_attention": "cross-attention projections (encoder-decoder models)",
    "encoder_attention": "attention projections in the encoder stack",
    "decoder_attention": "attention projections in the decoder stack (self and cross)",
    "feed_forward": "feed-forward (MLP) layers of every block",
    "feed_forward_with_attn_out": "feed-forward layers plus each attention block's output "
    "projection (the original study's BERT code; the complement of attention_qkv)",
    "overall": "every linear layer except the final layer",
    "final_layer": "the LM head (untied from the embeddings before it is compressed)",
    "all_linear": "every linear layer, final layer included (overall + final_layer)",
    "other": "linear layers outside the blocks (poolers, head transforms); part of overall",
}
GROUPS: tuple[str, ...] = tuple(GROUP_DESCRIPTIONS)

_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)
_CROSS = re.compile(r"cross|encdec|enc_dec|encoder_attn", re.IGNORECASE)


@dataclass(frozen=True)
class LinearLayer:
    """One linear layer with the facts the groups are built from."""

    name: str
    role: Role
    cross: bool
    stack: Literal["encoder", "decoder"]
    attention_block: str | None  # path of the attention block it belongs to
    out_features: int
    in_features: int
    bias: int

    @property
    def weight_params(self) -> int:
        return self.out_features * self.in_features

    @property
    def params(self) -> int:
        return self.weight_params + self.bias


def classify_linear_layers(model: nn.Module, family: Family) -> list[LinearLayer]:
    """Every linear layer of `model` (shared modules once), in registration order."""
    modules = dict(model.named_modules())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    encoder_ids = _encoder_module_ids(model, family)
    layers = []
    for name, module in modules.items():
        if not is_linear(module):
            continue
        ancestors = _ancestors(name, modules)
        attention_block = _attention_block(ancestors)
        if module is head:
            role: Role = "final_layer"
        elif attention_block is not None:
            role = "attention"
        elif any(part.isdigit() for part in name.split(".")):
            role = "feed_forward"
        else:
            role = "other"
        cross = role == "attention" and any(
            _CROSS.search(part) or _CROSS.search(type(mod).__name__) for part, mod in ancestors
        )
        in_encoder = family is Family.ENCODER or id(module) in encoder_ids
        out_f, in_f = weight_shape(module)
        layers.append(
            LinearLayer(
                name=name,
                role=role,
                cross=cross,
                stack="encoder" if in_encoder else "decoder",
                attention_block=attention_block if role == "attention" else None,
                out_features=out_f,
                in_features=in_f,
                bias=bias_numel(module),
            )
        )
    return layers


def _ancestors(name: str, modules: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
    """(attribute name, module) for each proper ancestor of `name`, outermost first."""
    parts = name.split(".")
    return [(parts[i - 1], modules[".".join(parts[:i])]) for i in range(1, len(parts))]


def _attention_block(ancestors: list[tuple[str, nn.Module]]) -> str | None:
    """Path of the outermost ancestor that is an attention block, if any."""
    path: list[str] = []
    for part, mod in ancestors:
        path.append(part)
        if _ATTENTION.search(part) or _ATTENTION.search(type(mod).__name__):
            return ".".join(path)
    return None


def _encoder_module_ids(model: nn.Module, family: Family) -> set[int]:
    if family is not Family.ENCODER_DECODER or not hasattr(model, "get_encoder"):
        return set()
    return {id(m) for m in model.get_encoder().modules()}


def group_members(layers: list[LinearLayer], group: str) -> list[LinearLayer]:
    attention = [layer for layer in layers if layer.role == "attention"]
    if group == "attention":
        return attention
    if group == "attention_qkv":
        outputs = _attention_outputs(attention)
        return [layer for layer in attention if layer.name not in outputs]
    if group == "feed_forward_with_attn_out":
        outputs = _attention_outputs(attention)
        return [layer for layer in layers
                if layer.role == "feed_forward" or layer.name in outputs]  # fmt: skip
    if group == "self_attention":
        return [layer for layer in attention if not layer.cross]
    if group == "cross_attention":
        return [layer for layer in attention if layer.cross]
    if group == "encoder_attention":
        return [layer for layer in attention if layer.stack == "encoder"]
    if group == "decoder_attention":
        return [layer for layer in attention if layer.stack == "decoder"]
    if group == "overall":
        return [layer for layer in layers if layer.role != "final_layer"]
    if group == "all_linear":
        return list(layers)
    return [layer for layer in layers if layer.role == group]


def _attention_outputs(attention: list[LinearLayer]) -> set[str]:
    """The output projection of each attention block: its last linear layer in registration
    order (Q, K, V come first in every architecture transformers has)."""
    return {layer.name for layer in {layer.attention_block: layer for layer in attention}.values()}


def check_group_names(spec: str) -> list[str]:
    """Split a `+`-joined group spec and check every name exists (no model needed)."""
    names = [part.strip() for part in spec.split("+")]
    for name in names:
        if name not in GROUP_DESCRIPTIONS:
            raise GroupError(f"unknown module group '{name}'; choose one of: {', '.join(GROUPS)}")
    return names


def resolve_group(
    layers: list[LinearLayer], spec: str, *, model_name: str = "model"
) -> list[LinearLayer]:
    """The layers of a group, or of a `+`-joined union of groups, in registration order.

    Raises `GroupError` for an unknown name, or a group with no layers in this model.
    """
    chosen: set[str] = set()
    for name in check_group_names(spec):
        members = group_members(layers, name)
        if not members:
            non_empty = [g for g in GROUPS if group_members(layers, g)]
            raise GroupError(
                f"module group '{name}' is empty for {model_name}; "
                f"groups with layers here: {', '.join(non_empty)}"
            )
        chosen.update(layer.name for layer in members)
    return [layer for layer in layers if layer.name in chosen]
