"""A recovery run: probe the model uncompressed, compressed, and compressed with a trained
adapter, and time a forward batch in each state (`knowcomp recover`; the ICML 2024 study's
comparison for one recipe and method)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from knowcomp.pipeline.core import Display, Pipeline


@dataclass
class RecoveryRun:
    """Each stage's probe results (uncompressed, compressed, recovered: present when probes
    ran), forward-batch seconds per model state, the trained adapter and the compression."""

    adapter: Any
    report: Any
    stages: dict[str, list[Any]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    ablation: dict[str, list[Any]] = field(default_factory=dict)  # IDP variant -> results


def run_recovery(
    pipeline: Pipeline,
    recipe: Any,
    settings: Any,
    train: Any,
    probes: list[Any],
    options: Any,
    *,
    latency: bool = True,
    display: Display | None = None,
    on_compressed: Any = None,
    ablation: bool = False,
) -> RecoveryRun:
    """Compress with `recipe` (seed `train.seed`), train `settings`' method on `train`'s text,
    and probe before, after compression and with the adapter attached. `on_compressed(report)`
    is called once the model is compressed (to print it). With `ablation` (IDP), each prompt
    alone and their naive concatenation are scored too (the ICML 2024 study's Table 3)."""
    from knowcomp.recovery.latency import forward_seconds, latency_batch
    from knowcomp.recovery.methods import check_trainable

    display = display or Display()
    loaded, seed = pipeline.loaded, train.seed
    check_trainable(loaded)
    pipeline.plan(recipe, seed)
    stages: dict[str, list[Any]] = {}
    timing: dict[str, float] = {}
    batch = latency_batch(loaded.model.get_input_embeddings().num_embeddings, seed=seed)

    def measure(stage: str, adapter: Any = None) -> None:
        if probes:
            with display.work(f"{stage} ") as progress:
                found = pipeline.evaluate(probes, options, adapter=adapter, progress=progress)
            stages[stage] = found.results
        if latency:
            name = stage if adapter is None else f"compressed + {adapter.method}"
            with pipeline.attached(adapter):
                timing[name] = forward_seconds(loaded.model, batch)

    measure("uncompressed")
    with display.compression() as progress:
        report = pipeline.compress(recipe, seed, progress).report
    if on_compressed is not None:
        on_compressed(report)
    check_trainable(loaded)  # a recipe may have added layers without gradients
    measure("compressed")
    tokens = train.blocks * train.seqlen
    with display.training(f"training {settings.method}", tokens) as step:
        adapter = pipeline.train_adapter(settings, train, report.recipe, step)
    measure("recovered", adapter)
    if latency and adapter.method != "lora":
        timing["compressed + lora"] = _lora_seconds(pipeline, batch)
    variants = _ablation(pipeline, adapter, probes, options, stages, display) if ablation else {}
    return RecoveryRun(adapter, report, stages, timing, variants)


def _ablation(
    pipeline: Pipeline,
    adapter: Any,
    probes: list[Any],
    options: Any,
    stages: dict[str, list[Any]],
    display: Display,
) -> dict[str, list[Any]]:
    """Variant name -> its probe results; IDP's own are the recovered stage's."""
    from knowcomp.recovery.ablation import IDP_ROW, ablation_variants

    scores: dict[str, list[Any]] = {}
    for variant in ablation_variants(adapter):
        if variant.name == IDP_ROW:
            scores[variant.name] = stages["recovered"]
            continue
        with display.work(f"{variant.name} ") as progress:
            found = pipeline.evaluate(probes, options, adapter=variant, progress=progress)
        scores[variant.name] = found.results
    return scores


def _lora_seconds(pipeline: Pipeline, batch: Any) -> float:
    """LoRA's latency for comparison: an untrained default LoRA (its values do not change
    the time a forward takes)."""
    from knowcomp.recovery.adapters import AdapterInfo, PeftAdapter
    from knowcomp.recovery.latency import forward_seconds
    from knowcomp.recovery.methods import lora_config
    from knowcomp.recovery.settings import LoraSettings

    settings = LoraSettings()
    config = lora_config(pipeline.loaded, settings)
    adapter = PeftAdapter(settings, AdapterInfo("lora", "lora", 0), config, {})
    with pipeline.attached(adapter):
        return forward_seconds(pipeline.loaded.model, batch)
