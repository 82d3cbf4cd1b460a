"""Built-in studies: the grid of *The Cost of Compression*, on any model, a quickstart, and the
shape of *Do Compressed LLMs Forget Knowledge?* (compression, then recovery) on any decoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knowcomp.probes.categories import STUDY_TASKS
from knowcomp.study.spec import (
    DEFAULT_PROBES,
    RecoverySettings,
    SpecError,
    StudySpec,
    Sweep,
    short_method,
)

GROUPS = ("attention", "feed_forward", "overall")
FORGET_RECOVER_LIMIT = 20  # items per task
FORGET_RECOVER_TOKENS = 4096  # training tokens per recover step
TENTHS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _global_pruning() -> list[Sweep]:
    return [Sweep(f"prune/{g}", f"prune:l1_unstructured:{g}:{{level}}", TENTHS) for g in GROUPS]


def _global_quantization() -> list[Sweep]:
    return [Sweep(f"quant/{g}", f"quant:dynamic_int8:{g}", seeds=(40, 50, 60)) for g in GROUPS]


def _prune_quantize() -> list[Sweep]:
    return [
        Sweep(
            f"prune+quant/{g}",
            f"prune:l1_unstructured:{g}:{{level}},quant:dynamic_int8:{g}",
            (0.2, 0.4),
        )
        for g in GROUPS
    ]


def _final_layer() -> list[Sweep]:
    return [
        Sweep("final/unstructured", "prune:l1_unstructured:final_layer:{level}", TENTHS),
        Sweep("final/structured", "prune:ln_structured:final_layer:{level}:p=1", TENTHS),
    ]


def _quickstart() -> list[Sweep]:
    """A little of every sweep, so each of the study's four findings has data to check."""
    return (
        [
            Sweep(f"prune/{g}", f"prune:l1_unstructured:{g}:{{level}}", (0.2, 0.4, 0.6, 0.8))
            for g in GROUPS
        ]
        + [Sweep(f"quant/{g}", f"quant:dynamic_int8:{g}") for g in GROUPS]
        + [
            Sweep("final/unstructured", "prune:l1_unstructured:final_layer:{level}", (0.3, 0.6)),
            Sweep("final/structured", "prune:ln_structured:final_layer:{level}:p=1", (0.3, 0.6)),
        ]
    )


# The Cost of Compression as its code ran: Overall_GQ and Overall_GPQ quantize every linear layer,
# the final one included (`all_linear`; GPQ prunes `overall` first, as the named recipe
# `overall-gpq`), and its BERT/RoBERTa code splits a block into attention = Q, K, V and
# feed-forward = the MLP plus the attention output projection.
STUDY_GROUPS = {"overall": "overall", "attention": "attention", "feed_forward": "feed_forward"}
STUDY_BERT_GROUPS = {"overall": "overall", "attention": "attention_qkv",
                     "feed_forward": "feed_forward_with_attn_out"}  # fmt: skip


def _study_pruning(groups: dict[str, str]) -> list[Sweep]:
    return [Sweep(f"prune/{g}", f"prune:l1_unstructured:{g}:{{level}}", TENTHS)
            for g in groups.values()]  # fmt: skip


def _study_quantization(groups: dict[str, str]) -> list[Sweep]:
    """GQ: dynamic int8 of Overall (final layer included), attention and feed-forward."""
    return [Sweep(f"quant/{_quantized(role, g)}", f"quant:dynamic_int8:{_quantized(role, g)}",
                  seeds=(40, 50, 60)) for role, g in groups.items()]  # fmt: skip


def _study_prune_quantize(groups: dict[str, str]) -> list[Sweep]:
    """GPQ: each group pruned 20% and 40%, then quantized (Overall: every linear layer)."""
    return [
        Sweep(f"prune+quant/{_quantized(role, g)}",
              f"prune:l1_unstructured:{g}:{{level}},quant:dynamic_int8:{_quantized(role, g)}",
              (0.2, 0.4))
        for role, g in groups.items()
    ]  # fmt: skip


def _quantized(role: str, group: str) -> str:
    return "all_linear" if role == "overall" else group


def _study(groups: dict[str, str]) -> tuple[Sweep, ...]:
    return tuple(_study_pruning(groups) + _study_quantization(groups)
                 + _study_prune_quantize(groups) + _final_layer())  # fmt: skip


# LoRA and IDP, the two the study sets against each other. Prompt and prefix tuning cost as much
# again each (a training run through the whole model, and a pass over the nine tasks, per
# compression): a spec adds them with `recover: [lora, prompt, prefix, idp]`.
RECOVERY_METHODS = ("lora", "idp")


def _forget_recover() -> list[Sweep]:
    """Hoang et al. (2024): GPTQ 4-bit and SparseGPT 50% of every linear layer of the blocks,
    each alone and followed by each recovery method (at its default settings)."""
    methods = tuple(short_method(m) for m in RECOVERY_METHODS)
    return [
        Sweep("gptq4/overall", "quant:gptq:overall:bits=4", recover=methods),
        Sweep("sparsegpt50/overall", "prune:sparsegpt:overall:0.5", recover=methods),
    ]


# The study's own settings (sec. 4): GPTQ at 3 bits, and every recovery method with its
# `paper` settings (LoRA rank 4 on Q, K, V, O and the MLP; prompts of 50 and 100 tokens;
# AdamW lr 2e-4, weight decay 1e-5); see `knowcomp.recovery.settings`.
PAPER_RECOVERY_METHODS = ("lora:paper", "idp:paper")


def _forget_recover_paper() -> list[Sweep]:
    """Hoang et al. (2024) with their settings: GPTQ 3-bit and SparseGPT 50%, each alone and
    followed by LoRA and IDP with the paper's recovery settings."""
    methods = tuple(short_method(m) for m in PAPER_RECOVERY_METHODS)
    return [
        Sweep("gptq3/overall", "quant:gptq:overall:bits=3", recover=methods),
        Sweep("sparsegpt50/overall", "prune:sparsegpt:overall:0.5", recover=methods),
    ]


@dataclass(frozen=True)
class Preset:
    summary: str
    sweeps: tuple[Sweep, ...]
    probes: tuple[str, ...] = DEFAULT_PROBES
    limit: int | None = None
    model: str | None = None  # a default model, for presets meant to run with no arguments
    recovery: RecoverySettings | None = None  # training of recover steps; None: the defaults
    lama_protocol: str = "templates"  # or "cost-of-compression"


PRESETS: dict[str, Preset] = {
    "global-pruning": Preset(
        "L1 unstructured global pruning of attention, feed-forward and overall, 10% to 90%",
        tuple(_global_pruning()),
    ),
    "global-quantization": Preset(
        "dynamic int8 quantization of attention, feed-forward and overall, seeds 40, 50, 60",
        tuple(_global_quantization()),
    ),
    "prune-quantize": Preset(
        "L1 global pruning at 20% and 40%, then dynamic int8, of each group",
        tuple(_prune_quantize()),
    ),
    "final-layer": Preset(
        "the final layer pruned L1 unstructured vs L1 structured (rows), 10% to 90%",
        tuple(_final_layer()),
    ),
    "all": Preset(
        "every sweep above",
        tuple(_global_pruning() + _global_quantization() + _prune_quantize() + _final_layer()),
    ),
    "namburi2023": Preset(
        "every sweep above as the study's code ran them: Overall_GQ / Overall_GPQ quantize "
        "every linear layer, the final one included (all_linear)",
        _study(STUDY_GROUPS),
    ),
    "namburi2023-bert": Preset(
        "namburi2023 with the study's BERT/RoBERTa grouping: attention = Q, K, V "
        "(attention_qkv), feed-forward = MLP + attention output (feed_forward_with_attn_out)",
        _study(STUDY_BERT_GROUPS),
    ),
    "namburi2023-quantization": Preset(
        "Overall_GQ / Att_GQ / FF_GQ as the study ran them: dynamic int8 of all_linear "
        "(final layer included), attention and feed-forward, seeds 40, 50, 60",
        tuple(_study_quantization(STUDY_GROUPS)),
    ),
    "namburi2023-prune-quantize": Preset(
        "GPQ as the study ran it: each group pruned 20% and 40%, then int8 (Overall: every "
        "linear layer, final layer included)",
        tuple(_study_prune_quantize(STUDY_GROUPS)),
    ),
    "quickstart": Preset(
        "minutes on a laptop CPU: SmolLM2, a little of every sweep above, on samples of "
        "T-REx and PIQA",
        tuple(_quickstart()),
        probes=("lama-trex", "piqa"),
        limit=10,
        model="smollm2-135m",
    ),
    "forget-recover": Preset(
        "Hoang et al. on any decoder: GPTQ 4-bit and SparseGPT 50% (overall), each alone and "
        "then recovered by LoRA and by IDP (4,096 training tokens each); the study's 9 tasks, "
        "20 items each",
        tuple(_forget_recover()),
        probes=STUDY_TASKS,
        limit=FORGET_RECOVER_LIMIT,
        recovery=RecoverySettings(
            tokens=FORGET_RECOVER_TOKENS, seqlen=256, batch_size=4, calibration="data:boolq,sciq"
        ),
    ),
    "forget-recover-paper": Preset(
        "forget-recover with the study's own settings: GPTQ 3-bit and SparseGPT 50%, then LoRA "
        "(rank 4 on attention and MLP) and IDP (prompts of 50 and 100 tokens), AdamW lr 2e-4, "
        "weight decay 1e-5; 4,096 training tokens each (the paper trains far longer)",
        tuple(_forget_recover_paper()),
        probes=STUDY_TASKS,
        limit=FORGET_RECOVER_LIMIT,
        recovery=RecoverySettings(
            tokens=FORGET_RECOVER_TOKENS, seqlen=256, batch_size=4, calibration="data:boolq,sciq"
        ),
    ),
}


def preset_sweeps(name: str) -> list[Sweep]:
    return list(get_preset(name).sweeps)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SpecError(f"unknown preset '{name}'; choose from: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_spec(name: str, models: tuple[str, ...] = ()) -> StudySpec:
    """A study from a preset alone; `models` defaults to the preset's own model, if it has one."""
    preset = get_preset(name)
    if not models and preset.model is None:
        raise SpecError(f"preset '{name}' needs a model; add --model, e.g. --model smollm2-135m")
    return StudySpec(
        name=name,
        models=models or (preset.model,),  # type: ignore[arg-type]
        sweeps=preset.sweeps,
        probes=preset.probes,
        limit=preset.limit,
        output=Path(f"runs/{name}.sqlite"),
        lama_protocol=preset.lama_protocol,
        **({"recovery": preset.recovery} if preset.recovery is not None else {}),
    )
