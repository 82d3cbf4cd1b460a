"""Training each recovery method on a (compressed) decoder; each returns an `Adapter`.

A registry like the compression methods': `@register("name")` on a function
`(loaded, settings, train, progress) -> Adapter`. LoRA, prompt tuning and prefix tuning train
through peft; IDP trains one prompt-tuning run per prompt (`IdpSettings.budget`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from knowcomp.models.forward import require_decoder
from knowcomp.models.loading import LoadedModel
from knowcomp.recovery.adapters import (
    Adapter,
    AdapterInfo,
    IdpAdapter,
    PeftAdapter,
    peft_state,
    peft_wrapped,
)
from knowcomp.recovery.settings import (
    IdpSettings,
    LoraSettings,
    MethodSettings,
    PrefixSettings,
    PromptSettings,
    RecoveryError,
    describe_settings,
)
from knowcomp.recovery.training import TrainLog, TrainSettings, train, training_blocks

Progress = Callable[[int, float], None] | None
Trainer = Callable[[LoadedModel, MethodSettings, TrainSettings, Progress], Adapter]
TRAINERS: dict[str, Trainer] = {}


def register(name: str) -> Callable[[Trainer], Trainer]:
    def add(fn: Trainer) -> Trainer:
        TRAINERS[name] = fn
        return fn

    return add


def check_trainable(loaded: LoadedModel) -> None:
    """Recovery trains through the model: decoders whose layers pass gradients."""
    require_decoder(loaded, "recovery", "trains with next-token loss and needs", RecoveryError)
    for name, module in loaded.model.named_modules():
        if type(module).__module__.startswith("torch.ao.nn.quantized"):
            raise RecoveryError(
                f"layer '{name}' is torch.ao dynamic int8, which passes no gradient, so nothing "
                "before it could train; quantize with backend=torchao "
                "(quant:dynamic_int8:GROUP:backend=torchao), gptq or weight_only instead"
            )


def check_recipe_trainable(recipe, *, on_cpu: bool) -> None:
    """Before any work: recovery cannot train after a recipe step whose layers pass no
    gradient (torch.ao dynamic int8; on CPU, `backend=auto` is torch.ao)."""
    from knowcomp.compress.quantization import DynamicInt8

    for step in recipe.steps:
        method = step.method
        if isinstance(method, DynamicInt8) and (
            method.backend == "torch_ao" or (method.backend == "auto" and on_cpu)
        ):
            raise RecoveryError(
                "recovery cannot train through torch.ao dynamic int8 layers (they pass no "
                "gradient); write quant:dynamic_int8:GROUP:backend=torchao, or use gptq or "
                "weight_only"
            )


def recover(
    loaded: LoadedModel,
    settings: MethodSettings,
    train_settings: TrainSettings,
    progress: Progress = None,
    *,
    recipe: str = "",
) -> Adapter:
    """Train `settings.method` on `loaded` (compressed in place) and return its adapter."""
    check_trainable(loaded)
    adapter = TRAINERS[settings.method](loaded, settings, train_settings, progress)
    adapter.info.model, adapter.info.recipe = loaded.spec, recipe
    adapter.info.train = train_settings.to_dict()
    return adapter


def _info(settings: MethodSettings, params: int, log: TrainLog) -> AdapterInfo:
    return AdapterInfo(settings.method, describe_settings(settings), params, log=log.to_dict())


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _train_peft(
    loaded: LoadedModel,
    settings: MethodSettings,
    config,
    blocks: torch.Tensor,
    train_settings: TrainSettings,
    seed: int,
    progress: Progress,
) -> tuple[object, dict, int, TrainLog]:
    """Train one peft config on `blocks`; the model is unwrapped again after."""
    device = next(loaded.model.parameters()).device
    torch.manual_seed(seed)  # the adapter's initial values
    with peft_wrapped(loaded.model, config) as wrapped:
        params = _trainable(wrapped)

        def loss(batch: torch.Tensor) -> torch.Tensor:
            batch = batch.to(device)
            return wrapped(input_ids=batch, labels=batch).loss

        log = train(
            loss,
            wrapped.parameters(),
            blocks,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            batch_size=train_settings.batch_size,
            seed=seed,
            progress=progress,
        )
        state = peft_state(wrapped)
    return wrapped.peft_config["default"], state, params, log


def lora_config(loaded: LoadedModel, settings: LoraSettings):
    """peft's LoraConfig on the linear layers of `settings.group` (knowcomp's module groups)."""
    from peft import LoraConfig, TaskType

    from knowcomp.modules.groups import classify_linear_layers, resolve_group

    layers = resolve_group(
        classify_linear_layers(loaded.model, loaded.family), settings.group, model_name=loaded.spec
    )
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=[layer.name for layer in layers],
    )


@register("lora")
def train_lora(
    loaded: LoadedModel, settings: LoraSettings, train_settings: TrainSettings, progress: Progress
) -> Adapter:
    [blocks] = training_blocks(loaded.tokenizer, train_settings)
    config, state, params, log = _train_peft(
        loaded, settings, lora_config(loaded, settings), blocks, train_settings,
        train_settings.seed, progress,
    )  # fmt: skip
    return PeftAdapter(settings, _info(settings, params, log), config, state)


def prompt_config(settings: PromptSettings):
    """peft's prompt-tuning config for `settings`."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    init = PromptTuningInit.SAMPLE_VOCAB if settings.init == "vocab" else PromptTuningInit.RANDOM
    return PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=settings.tokens, prompt_tuning_init=init
    )


@register("prompt")
def train_prompt(
    loaded: LoadedModel, settings: PromptSettings, train_settings: TrainSettings, progress: Progress
) -> Adapter:
    [blocks] = training_blocks(loaded.tokenizer, train_settings)
    config, state, params, log = _train_peft(
        loaded,
        settings,
        prompt_config(settings),
        blocks,
        train_settings,
        train_settings.seed,
        progress,
    )
    return PeftAdapter(settings, _info(settings, params, log), config, state)


@register("prefix")
def train_prefix(
    loaded: LoadedModel, settings: PrefixSettings, train_settings: TrainSettings, progress: Progress
) -> Adapter:
    [blocks] = training_blocks(loaded.tokenizer, train_settings)
    config, state, params, log = _train_peft(
        loaded,
        settings,
        prefix_config(settings),
        blocks,
        train_settings,
        train_settings.seed,
        progress,
    )
    return PeftAdapter(settings, _info(settings, params, log), config, state)


def prefix_config(settings: PrefixSettings):
    """peft's prefix-tuning config for `settings`."""
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=settings.tokens)


@register("idp")
def train_idp(
    loaded: LoadedModel, settings: IdpSettings, train_settings: TrainSettings, progress: Progress
) -> Adapter:
    """Each prompt is an ordinary prompt-tuning run with its own seed: on the whole budget
    (`budget=each`, the paper's way) or on its own disjoint share of it (`budget=split`)."""
    lengths = settings.lengths
    if settings.budget == "each":
        [blocks] = training_blocks(loaded.tokenizer, train_settings)
        runs = [blocks] * len(lengths)
    else:
        runs = training_blocks(loaded.tokenizer, train_settings, shards=len(lengths))
    prompts, params, log = [], 0, TrainLog()
    for i, (length, blocks) in enumerate(zip(lengths, runs, strict=True)):
        single = PromptSettings(tokens=length, init=settings.init, lr=settings.lr,
                                weight_decay=settings.weight_decay)  # fmt: skip
        _, state, n, part = _train_peft(
            loaded, single, prompt_config(single), blocks, train_settings,
            train_settings.seed + i, progress,
        )  # fmt: skip
        prompts.append(state["prompt_embeddings"])
        params += n
        log.steps, log.tokens = log.steps + part.steps, log.tokens + part.tokens
        log.losses += part.losses
        log.seconds += part.seconds
        log.parts.append(part.steps)
    return IdpAdapter(settings, _info(settings, params, log), prompts)
