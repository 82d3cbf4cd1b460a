"""The method registry: each method is a dataclass of its options, registered by name.

Adding a method is one new class with `@register`; recipes, validation, `knowcomp methods` and
reports pick it up from here.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from knowcomp.errors import RecipeError

if TYPE_CHECKING:
    from knowcomp.compress.layerwise import InputStats

Kind = Literal["prune", "quant"]


@dataclasses.dataclass(frozen=True)
class Method(ABC):
    """A compression method with validated options. Subclasses are frozen dataclasses."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    summary: ClassVar[str]
    takes_level: ClassVar[bool] = False
    level_required: ClassVar[bool] = True  # False where other options can set it (n:m)

    def describe(self) -> str:
        """`l1_unstructured(level=0.2, scope=global)`: the method with every option spelled out."""
        fields = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"{self.name}({fields})"

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def placement_problem(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this method cannot run on a model on `device` in `dtype`, or None: checked for
        a study before the first model loads. Every method runs everywhere unless it says."""
        return None


class PruneMethod(Method):
    """Zeroes weights in place. `weights` are (out, in) views sharing the modules' storage."""

    kind: ClassVar[Kind] = "prune"
    takes_level: ClassVar[bool] = True

    @abstractmethod
    def prune(self, weights: list[torch.Tensor], seed: int) -> None: ...


class QuantMethod(Method):
    """Builds a quantized replacement for one float linear module."""

    kind: ClassVar[Kind] = "quant"

    @abstractmethod
    def weight_bits(self) -> int:
        """Bits per stored weight, for the compressed-size report."""

    @abstractmethod
    def quantize(self, module: nn.Linear) -> nn.Module: ...


class CalibratedMethod(Method):
    """A method that needs the inputs each layer sees on calibration text (GPTQ, SparseGPT,
    Wanda). Mixed into a PruneMethod or QuantMethod, so recipes, validation and reports treat it
    as that kind.

    The session runs the model block by block on the calibration tokens, collects `statistic`
    for each target layer's inputs (`hessian`: the mean of x xᵀ; `input_norm`: the squared
    norm of every input feature), and calls `compress_layer` once per layer.
    """

    statistic: ClassVar[Literal["hessian", "input_norm"]]

    @abstractmethod
    def compress_layer(self, module: nn.Module, stats: InputStats, seed: int) -> nn.Module | None:
        """Prune methods zero the weight in place and return None; quant methods return the
        quantized replacement module."""


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under `cls.name`."""
    if cls.name in METHODS:
        raise ValueError(f"method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    load_builtin_methods()
    if name not in METHODS:
        raise RecipeError(
            f"unknown compression method '{name}'; choose one of: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]


def build_method(name: str, level: Any = None, options: dict[str, Any] | None = None) -> Method:
    """Instantiate a method from a name, an optional level and string-or-typed options."""
    cls = get_method(name)
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if level is not None:
        if not cls.takes_level:
            raise RecipeError(
                f"method '{name}' takes no level (got {level}); set its options instead: "
                f"{', '.join(fields) or 'none'}"
            )
        if "level" in options:
            raise RecipeError(
                f"method '{name}' got a level twice ({level} and level={options['level']}); "
                "give it once"
            )
        options["level"] = level
    elif cls.takes_level and cls.level_required and "level" not in options:
        raise RecipeError(f"method '{name}' needs a level, e.g. {name}:overall:0.5")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, raw in options.items():
        if key not in fields:
            raise RecipeError(
                f"method '{name}' has no option '{key}'; its options are: {', '.join(fields)}"
            )
        values[key] = _coerce(name, key, hints[key], raw)
    try:
        return cls(**values)
    except TypeError as err:
        raise RecipeError(f"method '{name}': {err}") from None


def _coerce(method: str, key: str, hint: Any, raw: Any) -> Any:
    """Convert an option written as text (from a compact recipe) into its declared type."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if raw not in allowed:
            raise RecipeError(
                f"method '{method}': {key} must be one of {', '.join(map(str, allowed))}, "
                f"got '{raw}'"
            )
        return raw
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            return None
        return _coerce(method, key, args[0], raw)
    try:
        if hint is bool and isinstance(raw, str):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if hint in (int, float):
            number = parse_number(raw)
            if hint is int and not number.is_integer():
                raise ValueError(raw)
            return hint(number)
        return hint(raw)
    except (TypeError, ValueError):
        raise RecipeError(
            f"method '{method}': {key} must be {getattr(hint, '__name__', hint)}, got '{raw}'; "
            "write it in ASCII digits, e.g. 4 or 0.5"
        ) from None


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_number(raw: Any) -> float:
    """A finite number written in ASCII digits, or `ValueError`.

    Python's `float` takes what a recipe should not: full-width and other Unicode digits,
    `nan`, `inf`, `1_000`, and `1e-400`, which silently becomes 0.0."""
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str) and _NUMBER.fullmatch(raw.strip()):
        number = float(raw)
        mantissa = raw.strip().lower().split("e")[0]
        if number == 0.0 and any(c in "123456789" for c in mantissa):
            raise ValueError(raw)  # underflow: a nonzero number too small for a float
    else:
        raise ValueError(raw)
    if not math.isfinite(number):
        raise ValueError(raw)
    return number


def load_builtin_methods() -> None:
    from knowcomp.compress import (  # noqa: F401  (registers methods)
        gptq,
        pruning,
        quantization,
        sparsegpt,
        wanda,
    )
