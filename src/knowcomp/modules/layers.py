"""What counts as a linear layer, and its weight in (out, in) orientation.

GPT-2-style `Conv1D` stores its weight as (in, out); every other linear type stores (out, in).
Quantized replacements (torch.ao dynamic int8) are still linear layers for grouping and reports.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from transformers.pytorch_utils import Conv1D

LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D, nnqd.Linear)


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, LINEAR_TYPES)


def weight_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of any linear type."""
    if isinstance(module, Conv1D):
        return (module.nf, module.weight.shape[0])
    if isinstance(module, nnqd.Linear):
        return (module.out_features, module.in_features)
    return (module.out_features, module.in_features)


def bias_numel(module: nn.Module) -> int:
    bias = module.bias() if isinstance(module, nnqd.Linear) else module.bias
    return 0 if bias is None else bias.numel()


def float_weight_out_in(module: nn.Module) -> torch.Tensor:
    """The float weight as an (out, in) view that shares storage, for in-place pruning."""
    if isinstance(module, Conv1D):
        return module.weight.data.t()
    if isinstance(module, nn.Linear):
        return module.weight.data
    raise TypeError(f"{type(module).__name__} has no float weight to prune")


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted path `name` inside `model`."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)
