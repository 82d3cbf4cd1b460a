"""Quantization methods: real integer weights, built as replacement modules.

`dynamic_int8` is the first study's post-training dynamic quantization (PTDQ). Its default
backend on CPU is PyTorch's own `torch.ao` dynamic int8 Linear, the very kernel the study's
`torch.quantization.quantize_dynamic` call used (per-tensor symmetric int8 weights, activations
quantized per batch at run time), so its numbers are comparable with the study's. `per_channel`
switches to one scale per output row. `backend=torchao` uses torchao's maintained
`Int8DynamicActivationInt8WeightConfig` (per-row weight scales, per-token activations), which
also runs on GPUs; `auto` picks torch.ao on CPU and torchao elsewhere.

`weight_only` is round-to-nearest integer weights (2 to 8 bits, per channel or per group of
inputs) through torchao's `IntxWeightOnlyConfig`; activations stay in float.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from knowcomp.compress.registry import QuantMethod, register
from knowcomp.errors import RecipeError


def as_linear(module: nn.Module) -> nn.Linear:
    """A float nn.Linear computing the same function (GPT-2's Conv1D stores weight as (in, out))."""
    if isinstance(module, nn.Linear):
        return module
    if isinstance(module, Conv1D):
        in_f, out_f = module.weight.shape
        linear = nn.Linear(in_f, out_f, bias=module.bias is not None)
        linear.to(device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(module.weight.t())
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        return linear
    raise RecipeError(f"cannot quantize a {type(module).__name__}: it is not a float linear layer")


def _torchao_quantize(linear: nn.Linear, config) -> nn.Linear:
    from torchao.quantization import quantize_

    quantized = copy.deepcopy(linear)
    quantize_(quantized, config)
    return quantized


@register
@dataclass(frozen=True)
class DynamicInt8(QuantMethod):
    """Post-training dynamic quantization: int8 weights, activations quantized at run time."""

    name = "dynamic_int8"
    summary = "int8 weights + activations quantized at run time (the study's PTDQ)"
    backend: Literal["auto", "torch_ao", "torchao"] = "auto"
    granularity: Literal["per_tensor", "per_channel"] = "per_tensor"

    def weight_bits(self) -> int:
        return 8

    def resolved_backend(self, device: torch.device) -> str:
        if self.backend != "auto":
            return self.backend
        return "torch_ao" if device.type == "cpu" else "torchao"

    def placement_problem(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if self.resolved_backend(device) != "torch_ao":
            return None
        if device.type != "cpu":
            return "dynamic_int8 backend=torch_ao runs on CPU only; use backend=torchao"
        if dtype != torch.float32:
            return (  # its int8 layers take float32 activations; the model's others make bf16
                f"dynamic_int8 on CPU (torch.ao) needs a float32 model, not {dtype}; set dtype: "
                "float32, or use dynamic_int8:...:backend=torchao"
            )
        return None

    def quantize(self, module: nn.Module) -> nn.Module:
        linear = as_linear(module)
        backend = self.resolved_backend(linear.weight.device)
        if backend == "torch_ao":
            return self._torch_ao(linear)
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig
        from torchao.quantization.granularity import PerRow, PerTensor

        gran = PerTensor() if self.granularity == "per_tensor" else PerRow()
        return _torchao_quantize(linear, Int8DynamicActivationInt8WeightConfig(granularity=gran))

    def _torch_ao(self, linear: nn.Linear) -> nn.Module:
        if linear.weight.device.type != "cpu":
            raise RecipeError(
                "dynamic_int8 backend=torch_ao runs on CPU only; use backend=torchao on GPUs"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao announces its move to torchao
            from torch.ao.nn.quantized import dynamic as nnqd
            from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

            float_linear = (
                linear if linear.weight.dtype == torch.float32 else copy.deepcopy(linear).float()
            )
            float_linear.qconfig = (
                default_dynamic_qconfig
                if self.granularity == "per_tensor"
                else per_channel_dynamic_qconfig
            )
            try:
                return nnqd.Linear.from_float(float_linear)
            finally:
                del float_linear.qconfig


@register
@dataclass(frozen=True)
class WeightOnly(QuantMethod):
    """Round-to-nearest integer weights (2-8 bits), per output channel or per input group."""

    name = "weight_only"
    summary = "round-to-nearest int weights, bits 2-8, per channel or group_size inputs"
    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise RecipeError(f"weight_only: bits must be 2 to 8, got {self.bits}")
        if self.group_size is not None and self.group_size <= 0:
            raise RecipeError(f"weight_only: group_size must be positive, got {self.group_size}")

    def weight_bits(self) -> int:
        return self.bits

    def quantize(self, module: nn.Module) -> nn.Module:
        from torchao.quantization import IntxWeightOnlyConfig, MappingType
        from torchao.quantization.granularity import PerAxis, PerGroup

        linear = as_linear(module)
        if self.group_size is not None and linear.in_features % self.group_size:
            raise RecipeError(
                f"weight_only: group_size {self.group_size} does not divide a layer's "
                f"{linear.in_features} inputs; choose a divisor of every layer's input size"
            )
        config = IntxWeightOnlyConfig(
            weight_dtype=getattr(torch, f"int{self.bits}"),
            granularity=PerAxis(0) if self.group_size is None else PerGroup(self.group_size),
            mapping_type=MappingType.SYMMETRIC if self.symmetric else MappingType.ASYMMETRIC,
        )
        return _torchao_quantize(linear, config)
