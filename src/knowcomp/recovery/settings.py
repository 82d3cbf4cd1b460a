"""What each recovery method takes, as validated dataclasses, and the `method:key=value` syntax.

`parse_method("lora:r=16:alpha=32")` gives the method's settings with those two fields changed;
every field carries its help text, which `knowcomp recover --help-methods` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from knowcomp.errors import KnowcompError


class RecoveryError(KnowcompError):
    """A recovery method or setting that is unknown, out of range, or cannot apply here."""


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class LoraSettings:
    """LoRA (Hu et al., 2022) through peft: low-rank updates beside frozen linear layers."""

    method: ClassVar[str] = "lora"
    r: int = _help("rank of the update matrices", 8)
    alpha: int = _help("scaling numerator: the update is scaled by alpha / r", 16)
    dropout: float = _help("dropout on the LoRA input during training", 0.0)
    group: str = _help("module group whose linear layers get LoRA (knowcomp modules)", "attention")
    lr: float = _help("AdamW learning rate", 1e-3)

    def __post_init__(self) -> None:
        _check(self.r >= 1, "lora: r must be at least 1")
        _check(self.alpha > 0, "lora: alpha must be positive")
        _check(0 <= self.dropout < 1, "lora: dropout must be in [0, 1)")
        _check(self.lr > 0, "lora: lr must be positive")


@dataclass(frozen=True)
class PromptSettings:
    """Prompt tuning (Lester et al., 2021) through peft: trained embeddings before the text."""

    method: ClassVar[str] = "prompt"
    tokens: int = _help("soft prompt length, in virtual tokens", 20)
    init: str = _help("'vocab' (embeddings of random vocabulary tokens) or 'random'", "vocab")
    lr: float = _help("AdamW learning rate", 1e-2)

    def __post_init__(self) -> None:
        _check(self.tokens >= 1, f"{self.method}: tokens must be at least 1")
        _check(self.init in ("vocab", "random"), f"{self.method}: init is 'vocab' or 'random'")
        _check(self.lr > 0, f"{self.method}: lr must be positive")


@dataclass(frozen=True)
class PrefixSettings:
    """Prefix tuning (Li and Liang, 2021) through peft: trained keys and values in every layer."""

    method: ClassVar[str] = "prefix"
    tokens: int = _help("prefix length, in virtual tokens", 20)
    lr: float = _help("AdamW learning rate", 1e-2)

    def __post_init__(self) -> None:
        _check(self.tokens >= 1, "prefix: tokens must be at least 1")
        _check(self.lr > 0, "prefix: lr must be positive")


@dataclass(frozen=True)
class IdpSettings(PromptSettings):
    """Inference-time dynamic prompting (Hoang et al., 2024): one of several prompts per input.

    `prompts` soft prompts, each trained alone on its own share of the token budget; per
    input, the prompt whose keys get the most attention from the input tokens is used."""

    method: ClassVar[str] = "idp"
    prompts: int = _help("number of soft prompts to choose from", 3)
    layers: int = _help("choose from the attention of the first N layers (0: all layers); "
                        "fewer layers make the choice cheaper", 0)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.prompts >= 2, "idp: prompts must be at least 2 (one prompt is 'prompt')")
        _check(self.layers >= 0, "idp: layers must be 0 (all) or a positive number")


SETTINGS: dict[str, type] = {s.method: s for s in (LoraSettings, PromptSettings, PrefixSettings,
                                                   IdpSettings)}  # fmt: skip
METHODS: tuple[str, ...] = tuple(SETTINGS)

MethodSettings = LoraSettings | PromptSettings | PrefixSettings | IdpSettings


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RecoveryError(message)


def parse_method(text: str) -> MethodSettings:
    """`name[:key=value]...`, e.g. `lora`, `lora:r=16`, `idp:prompts=4:tokens=10`."""
    name, *options = [part.strip() for part in text.strip().split(":")]
    if name not in SETTINGS:
        raise RecoveryError(
            f"unknown recovery method '{name}'; choose one of: {', '.join(METHODS)}"
        )
    cls = SETTINGS[name]
    known = {f.name: f for f in fields(cls)}
    changes: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in known:
            raise RecoveryError(
                f"{name}: unknown option '{option}'; options are "
                + ", ".join(f"{k}=" for k in known)
            )
        changes[key] = _convert(name, key, value, type(known[key].default))
    try:
        return replace(cls(), **changes)
    except TypeError as err:  # pragma: no cover - guarded by `known`
        raise RecoveryError(f"{name}: {err}") from None


def _convert(method: str, key: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise RecoveryError(f"{method}: {key}={value!r} is not a valid {kind.__name__}") from None


def describe_settings(settings: MethodSettings) -> str:
    """`lora:r=8:alpha=16:...`: the compact text that `parse_method` reads back."""
    parts = [settings.method, *(f"{f.name}={getattr(settings, f.name)}" for f in fields(settings))]
    return ":".join(parts)


def settings_help() -> str:
    """Every method with its options, defaults and help, for `--help-methods`."""
    lines = []
    for name, cls in SETTINGS.items():
        lines.append(f"{name}: {(cls.__doc__ or '').split(chr(10))[0]}")
        for f in fields(cls):
            lines.append(f"    {f.name}={f.default!r}  {f.metadata.get('help', '')}")
    return "\n".join(lines)
