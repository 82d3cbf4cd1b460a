"""What each recovery method takes, as validated dataclasses, and the `method:key=value` syntax.

`parse_method("lora:r=16:alpha=32")` gives the method's settings with those two fields changed;
every field carries its help text, which `knowcomp recover --help-methods` prints. The word
`paper` starts from the settings of *Do Compressed LLMs Forget Knowledge?* instead of knowcomp's
defaults (`lora:paper`, `idp:paper:tokens=26+100`); later options still change single fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from knowcomp.errors import KnowcompError


class RecoveryError(KnowcompError):
    """A recovery method or setting that is unknown, out of range, or cannot apply here."""


# Hoang et al. (2024), sec. 4: AdamW with lr 2e-4 and weight decay 1e-5 for every method.
PAPER_LR = 2e-4
PAPER_WEIGHT_DECAY = 1e-5
PAPER = "paper"  # the option word that selects a method's `paper()` settings


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
    weight_decay: float = _help("AdamW weight decay", 0.0)

    def __post_init__(self) -> None:
        _check(self.r >= 1, "lora: r must be at least 1")
        _check(self.alpha > 0, "lora: alpha must be positive")
        _check(0 <= self.dropout < 1, "lora: dropout must be in [0, 1)")
        _check(self.lr > 0, "lora: lr must be positive")
        _check(self.weight_decay >= 0, "lora: weight_decay must be 0 or more")

    @classmethod
    def paper(cls) -> LoraSettings:
        """Hoang et al. (2024): rank 4 (their ranks are 2-4) on Q, K, V, O and the MLP."""
        return cls(r=4, alpha=8, group="attention+feed_forward", lr=PAPER_LR,
                   weight_decay=PAPER_WEIGHT_DECAY)  # fmt: skip


@dataclass(frozen=True)
class PromptSettings:
    """Prompt tuning (Lester et al., 2021) through peft: trained embeddings before the text."""

    method: ClassVar[str] = "prompt"
    tokens: int = _help("soft prompt length, in virtual tokens", 20)
    init: str = _help("'vocab' (embeddings of random vocabulary tokens) or 'random'", "vocab")
    lr: float = _help("AdamW learning rate", 1e-2)
    weight_decay: float = _help("AdamW weight decay", 0.0)

    def __post_init__(self) -> None:
        _check(self.tokens >= 1, "prompt: tokens must be at least 1")
        _check(self.init in ("vocab", "random"), "prompt: init is 'vocab' or 'random'")
        _check(self.lr > 0, "prompt: lr must be positive")
        _check(self.weight_decay >= 0, "prompt: weight_decay must be 0 or more")

    @classmethod
    def paper(cls) -> PromptSettings:
        """Hoang et al. (2024): 50 tokens (their prompts have 26, 50 or 100), lr 2e-4, wd 1e-5."""
        return cls(tokens=50, lr=PAPER_LR, weight_decay=PAPER_WEIGHT_DECAY)


@dataclass(frozen=True)
class PrefixSettings:
    """Prefix tuning (Li and Liang, 2021) through peft: trained keys and values in every layer."""

    method: ClassVar[str] = "prefix"
    tokens: int = _help("prefix length, in virtual tokens", 20)
    lr: float = _help("AdamW learning rate", 1e-2)
    weight_decay: float = _help("AdamW weight decay", 0.0)

    def __post_init__(self) -> None:
        _check(self.tokens >= 1, "prefix: tokens must be at least 1")
        _check(self.lr > 0, "prefix: lr must be positive")
        _check(self.weight_decay >= 0, "prefix: weight_decay must be 0 or more")

    @classmethod
    def paper(cls) -> PrefixSettings:
        """Hoang et al. (2024): 50 virtual tokens, lr 2e-4, weight decay 1e-5."""
        return cls(tokens=50, lr=PAPER_LR, weight_decay=PAPER_WEIGHT_DECAY)


@dataclass(frozen=True)
class IdpSettings:
    """Inference-time dynamic prompting (Hoang et al., 2024): one of several prompts per input.

    Soft prompts, possibly of different lengths, each trained as its own prompt-tuning run; per
    input, the prompt whose block of the attention matrix (input tokens x its tokens) has the
    highest mean is used (`knowcomp.recovery.idp`)."""

    method: ClassVar[str] = "idp"
    tokens: str = _help("prompt lengths joined by '+', one per prompt (50+100: the paper's "
                        "two prompts); a single length with prompts=N gives N equal prompts",
                        "50+100")  # fmt: skip
    prompts: int = _help("number of prompts of the single length in tokens (0: one per length "
                         "listed in tokens)", 0)  # fmt: skip
    init: str = _help("'vocab' (embeddings of random vocabulary tokens) or 'random'", "vocab")
    lr: float = _help("AdamW learning rate", 1e-2)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    budget: str = _help(
        "'each': every prompt trains on the whole token budget (the paper: "
        "one ordinary prompt-tuning run per prompt); 'split': the budget is cut "
        "into one disjoint share per prompt (the cost of one run)",
        "each",
    )
    layers: int = _help("choose from the attention of the first N layers: 1 chooses inside the "
                        "input's own forward (no extra pass); N > 1, or 0 for all layers, runs "
                        "a selection pass over those layers first", 1)  # fmt: skip

    def __post_init__(self) -> None:
        _check(self.init in ("vocab", "random"), "idp: init is 'vocab' or 'random'")
        _check(self.lr > 0, "idp: lr must be positive")
        _check(self.weight_decay >= 0, "idp: weight_decay must be 0 or more")
        _check(self.budget in ("each", "split"), "idp: budget is 'each' or 'split'")
        _check(self.layers >= 0, "idp: layers must be 0 (all) or a positive number")
        _check(self.prompts != 1, "idp: prompts must be at least 2 (one prompt is 'prompt')")
        _check(self.prompts >= 0, "idp: prompts must be at least 2, or 0 (one per length)")
        self.lengths  # noqa: B018 - validates tokens

    @property
    def lengths(self) -> tuple[int, ...]:
        """The length of every prompt, in order."""
        parts = str(self.tokens).split("+")
        if not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
            raise RecoveryError(
                f"idp: tokens={self.tokens!r} is not a list of lengths; write positive whole "
                "numbers joined by '+', e.g. tokens=50+100"
            )
        lengths = tuple(int(p) for p in parts)
        if len(lengths) == 1:
            if not self.prompts:
                raise RecoveryError(
                    f"idp: tokens={self.tokens} gives one prompt (that is 'prompt'); list "
                    "several lengths (tokens=50+100) or add prompts=N for N equal prompts"
                )
            return lengths * self.prompts
        if self.prompts and self.prompts != len(lengths):
            raise RecoveryError(
                f"idp: prompts={self.prompts} does not match tokens={self.tokens} "
                f"({len(lengths)} lengths); drop prompts, or give one length with prompts=N"
            )
        return lengths

    @classmethod
    def paper(cls) -> IdpSettings:
        """Hoang et al. (2024): prompts of 50 and 100 tokens, AdamW lr 2e-4, weight decay 1e-5."""
        return cls(tokens="50+100", lr=PAPER_LR, weight_decay=PAPER_WEIGHT_DECAY)


SETTINGS: dict[str, type] = {s.method: s for s in (LoraSettings, PromptSettings, PrefixSettings,
                                                   IdpSettings)}  # fmt: skip
METHODS: tuple[str, ...] = tuple(SETTINGS)

MethodSettings = LoraSettings | PromptSettings | PrefixSettings | IdpSettings


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RecoveryError(message)


def parse_method(text: str) -> MethodSettings:
    """`name[:paper][:key=value]...`: `lora`, `lora:r=16`, `lora:paper`, `idp:tokens=26+100`."""
    name, *options = [part.strip() for part in text.strip().split(":")]
    if name not in SETTINGS:
        raise RecoveryError(
            f"unknown recovery method '{name}'; choose one of: {', '.join(METHODS)}"
        )
    cls = SETTINGS[name]
    known = {f.name: f for f in fields(cls)}
    changes: dict[str, Any] = {}
    start = cls
    if options and options[0] == PAPER:
        start, options = cls.paper, options[1:]
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in known:
            raise RecoveryError(
                f"{name}: unknown option '{option}'; options are {PAPER} (first) and "
                + ", ".join(f"{k}=" for k in known)
            )
        changes[key] = _convert(name, key, value, type(known[key].default))
    try:
        return replace(start(), **changes)
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
        paper = cls.paper()
        changed = [f"{f.name}={getattr(paper, f.name)}" for f in fields(cls)
                   if getattr(paper, f.name) != f.default]  # fmt: skip
        lines.append(f"    {name}:{PAPER}  the paper's settings: {':'.join(changed)}")
    return "\n".join(lines)
