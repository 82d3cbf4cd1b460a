"""Trained recovery state that can be attached to a model, detached, saved and loaded.

An adapter never changes the weights it was trained against. LoRA adds peft's low-rank layers
beside the (compressed) linear layers while attached and takes them out again on detach; the
prompt methods (prompt tuning, prefix tuning, IDP) attach as a key/value prefix
(`knowcomp.recovery.prefix`). On disk an adapter is peft's own folder (`adapter_config.json`,
`adapter_model.safetensors`) for LoRA, prompt and prefix tuning, and `idp_prompts.safetensors`
for IDP, with `knowcomp-recovery.json` beside it saying what made it.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from knowcomp.recovery.idp import DynamicPrompts, load_prompts
from knowcomp.recovery.prefix import KVPrefix, batch_size_of, prefixed, prompts_prefix
from knowcomp.recovery.settings import MethodSettings, RecoveryError, parse_method

RECORD = "knowcomp-recovery.json"
IDP_FILE = "idp_prompts.safetensors"


@dataclass
class AdapterInfo:
    """What made an adapter: the method's settings, training, model and recipe."""

    method: str
    settings: str  # `describe_settings` text
    trainable_params: int
    model: str = ""
    recipe: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # `knowcomp recover`'s comparison
    placement: dict[str, Any] = field(default_factory=dict)  # device and dtype it trained on


class Adapter(ABC):
    """Recovery state for one model; `attached(model)` while evaluating."""

    def __init__(self, settings: MethodSettings, info: AdapterInfo) -> None:
        self.settings, self.info = settings, info

    @property
    def method(self) -> str:
        return self.settings.method

    @abstractmethod
    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[nn.Module]: ...

    @abstractmethod
    def _save_state(self, folder: Path, model: nn.Module) -> None: ...

    def save(self, folder: Path, model: nn.Module) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self._save_state(folder, model)
        (folder / RECORD).write_text(json.dumps(asdict(self.info), indent=2) + "\n")
        return folder


class PeftAdapter(Adapter):
    """LoRA, prompt tuning or prefix tuning: a peft config and its trained state dict."""

    def __init__(self, settings: MethodSettings, info: AdapterInfo, config, state) -> None:
        super().__init__(settings, info)
        self.config, self.state = config, state

    @contextmanager
    def _peft(self, model: nn.Module) -> Iterator[Any]:
        """`model` wrapped by peft with this state, in eval mode."""
        from peft import set_peft_model_state_dict

        with peft_wrapped(model, self.config) as wrapped:
            set_peft_model_state_dict(wrapped, self.state)
            wrapped.eval()
            yield wrapped

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[nn.Module]:
        if self.method == "lora":
            with self._peft(model):
                yield model
            return
        prefix = self.prefix(model)
        with prefixed(model, lambda kwargs: prefix.rows(batch_size_of(kwargs)), prefix.length):
            yield model

    def prefix(self, model: nn.Module) -> KVPrefix:
        """The virtual tokens' keys and values, computed once for this model's weights."""
        if self.method == "prompt":
            return prompts_prefix(model, self.state["prompt_embeddings"][None])
        with self._peft(model) as wrapped, torch.no_grad():
            return KVPrefix.from_cache(wrapped.get_prompt(batch_size=1))

    def _save_state(self, folder: Path, model: nn.Module) -> None:
        with self._peft(model) as wrapped:
            wrapped.save_pretrained(str(folder))


class IdpAdapter(Adapter):
    """IDP: soft prompts ([length, hidden] each, lengths may differ), one chosen per input."""

    def __init__(
        self, settings: MethodSettings, info: AdapterInfo, prompts: Sequence[torch.Tensor]
    ) -> None:
        super().__init__(settings, info)
        self.prompts = list(prompts)
        self.last: DynamicPrompts | None = None  # the last attachment (its choice counts)
        # how often each prompt was chosen over every attachment so far (adaptive evaluation
        # attaches once per chunk of items)
        self.choices: torch.Tensor | None = None

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[nn.Module]:
        chooser = DynamicPrompts(model, self.prompts, self.settings.layers)
        self.last = chooser
        try:
            with chooser.installed():
                yield model
        finally:
            before = self.choices if self.choices is not None else 0
            self.choices = before + chooser.choices

    def _save_state(self, folder: Path, model: nn.Module) -> None:
        from safetensors.torch import save_file

        tensors = {f"prompt.{i}": p.contiguous() for i, p in enumerate(self.prompts)}
        save_file(tensors, str(folder / IDP_FILE))


@contextmanager
def model_flags_kept(model: nn.Module) -> Iterator[None]:
    """Give back the `requires_grad` flags and the train/eval mode that peft changes."""
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    training = model.training
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(grads.get(name, p.requires_grad))
        model.train(training)


@contextmanager
def peft_wrapped(model: nn.Module, config: Any) -> Iterator[Any]:
    """`model` wrapped by peft with `config`; unwrapped after (LoRA layers out), flags kept."""
    from peft import get_peft_model

    with model_flags_kept(model):
        with warnings.catch_warnings():
            quiet_peft_warnings()
            wrapped = get_peft_model(model, config)
        try:
            yield wrapped
        finally:
            unwrap(wrapped)


def peft_state(wrapped: Any) -> dict[str, torch.Tensor]:
    """A detached copy of the adapter's trained tensors (what peft saves)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(wrapped).items()}


def quiet_peft_warnings() -> None:
    """Inside `warnings.catch_warnings()`: silence what peft says that is not for our users
    (a deprecated transformers call; LoRA on torchao weights cannot merge, which we never do)."""
    warnings.simplefilter("ignore", FutureWarning)
    warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated")


def unwrap(wrapped: Any) -> nn.Module:
    """The base model of a peft wrapper, with LoRA layers (if any) taken out."""
    if wrapped.peft_config[wrapped.active_adapter].is_prompt_learning:
        return wrapped.get_base_model()
    return wrapped.unload()


def adapter_record(folder: Path) -> AdapterInfo:
    """What `knowcomp-recovery.json` in `folder` says made the adapter."""
    record = folder / RECORD
    if not record.is_file():
        raise RecoveryError(
            f"'{folder}' is not a knowcomp adapter (no {RECORD}); give a folder written by "
            "`knowcomp recover --out`"
        )
    try:
        return AdapterInfo(**json.loads(record.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise RecoveryError(f"'{record}' is not a knowcomp adapter record ({err})") from None


def load_adapter(folder: Path, model: nn.Module) -> Adapter:
    """An adapter saved by `Adapter.save`, ready to attach to `model` (the same architecture)."""
    info = adapter_record(folder)
    settings = parse_method(info.settings)
    if settings.method == "idp":
        from safetensors.torch import load_file

        return IdpAdapter(settings, info, load_prompts(load_file(str(folder / IDP_FILE))))
    from peft import PeftModel

    with model_flags_kept(model):
        with warnings.catch_warnings():
            quiet_peft_warnings()
            wrapped = PeftModel.from_pretrained(model, str(folder))
        config = wrapped.peft_config["default"]
        state = peft_state(wrapped)
        unwrap(wrapped)
    config.inference_mode = False
    return PeftAdapter(settings, info, config, state)
