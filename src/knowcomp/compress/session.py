"""Apply recipes to a loaded model, and restore exactly the touched tensors afterwards.

A sweep over levels loads the model once: before each recipe the session keeps a copy of every
weight it is about to prune and every module it is about to replace, and `restore()` puts them
back. Nothing else in the model is copied.

Calibrated methods (GPTQ, SparseGPT, Wanda) need the inputs each layer sees. The session owns
the calibration (a `CalibrationSpec`, tokenized once per seed with the model's tokenizer, or
ready token ids), runs the model block by block on it (`layerwise.calibrate_layers`), and
compresses each layer through the same undo bookkeeping as every other step, so `restore()`
is unchanged. The methods themselves only see one layer and its input statistics. Calibrated
steps take minutes on a CPU: `apply(progress=...)` reports them layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from knowcomp.compress.calibration import Calibration, CalibrationSpec, build_calibration
from knowcomp.compress.layerwise import InputStats, calibrate_layers
from knowcomp.compress.recipe import Recipe, Step
from knowcomp.compress.registry import CalibratedMethod, PruneMethod, QuantMethod
from knowcomp.compress.report import (
    CompressionReport,
    LayerBaseline,
    StepZeros,
    build_report,
    zero_count,
)
from knowcomp.errors import RecipeError
from knowcomp.models.loading import LoadedModel
from knowcomp.modules.groups import LinearLayer, classify_linear_layers, resolve_group
from knowcomp.modules.layers import float_weight_out_in, replace_module

# progress(description, total) -> advance(n) or None: one bar per calibrated step, in layers
ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


@dataclass
class PlannedStep:
    step: Step
    layers: list[LinearLayer]


@dataclass
class _Undo:
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    modules: list[tuple[str, nn.Module]] = field(default_factory=list)
    untied_head: tuple[str, nn.Parameter, bool] | None = None
    zeros_before: dict[str, int] = field(default_factory=dict)  # per layer, before its 1st change


class CompressionSession:
    """Compress one loaded model with recipe after recipe, restoring it in between."""

    def __init__(
        self, loaded: LoadedModel, *, calibration: CalibrationSpec | Calibration | None = None
    ) -> None:
        self.loaded = loaded
        self.calibration_source = calibration if calibration is not None else CalibrationSpec()
        self._calibrations: dict[int, Calibration] = {}
        self.model = loaded.model
        self.layers = classify_linear_layers(self.model, loaded.family)
        self._modules = dict(self.model.named_modules())
        self.baseline = {
            layer.name: LayerBaseline.of(self._modules[layer.name]) for layer in self.layers
        }
        self.quant_bits: dict[str, int] = {}
        self._undo = _Undo()
        self._head = self._head_and_tie()

    # -- planning: everything that can fail does so here, before any weight changes --------
    def plan(self, recipe: Recipe, *, seed: int = 0) -> list[PlannedStep]:
        planned, quantized_by = [], {}
        for i, step in enumerate(recipe.steps, 1):
            layers = resolve_group(self.layers, step.group, model_name=self._describe_model())
            for layer in layers:
                if layer.name in quantized_by:
                    raise RecipeError(
                        f"recipe step {i} ({step.group}) touches {layer.name}, which step "
                        f"{quantized_by[layer.name]} already quantized; prune first, then quantize"
                    )
            if isinstance(step.method, QuantMethod):
                quantized_by.update({layer.name: i for layer in layers})
            planned.append(PlannedStep(step, layers))
        if any(isinstance(p.step.method, CalibratedMethod) for p in planned):
            self.calibration(seed)  # a missing file or too little text fails here
        return planned

    def calibration(self, seed: int = 0) -> Calibration:
        """The calibration tokens for `seed` (built once per seed, then reused)."""
        source = self.calibration_source
        if isinstance(source, Calibration):
            calibration = source
        else:
            spec = source.with_seed(seed)
            if seed not in self._calibrations:
                self._calibrations[seed] = build_calibration(self.loaded.tokenizer, spec)
            calibration = self._calibrations[seed]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and calibration.seqlen > limit:
            raise RecipeError(
                f"calibration seqlen {calibration.seqlen} exceeds the {limit} positions of "
                f"{self._describe_model()}; lower --calibration-seqlen"
            )
        return calibration

    def _describe_model(self) -> str:
        return f"{self.loaded.name} (a {self.loaded.family.value} model)"

    # -- applying ---------------------------------------------------------------------------
    def apply(
        self, recipe: Recipe, *, seed: int = 0, progress: ProgressFactory | None = None
    ) -> CompressionReport:
        """Compress in place (after restoring any earlier recipe) and report what changed.

        `progress`, if given, is called once per calibrated step with a description and its
        number of layers; the callable it returns is advanced by one as each layer is done.
        """
        planned = self.plan(recipe, seed=seed)
        self.restore()
        notes, calibration = [], None
        if any(layer.role == "final_layer" for p in planned for layer in p.layers):
            note = self._untie_head()
            if note:
                notes.append(note)
        steps: list[StepZeros] = []
        counted: dict[str, int] = {}  # each changed layer's zeros after its last step
        with torch.no_grad():
            for i, p in enumerate(planned, 1):
                now = self._zeros_now(p)
                for name, zeros in now.items():  # not changed yet: its zeros before the recipe
                    self._undo.zeros_before.setdefault(name, zeros)
                before = sum(now.values())
                if isinstance(p.step.method, CalibratedMethod):
                    calibration = self.calibration(seed)
                    advance = progress(_describe_step(p), len(p.layers)) if progress else None
                    self._calibrated(p, calibration, seed, advance)
                elif isinstance(p.step.method, PruneMethod):
                    self._prune(p, seed)
                else:
                    self._quantize(p)
                after = self._zeros_now(p)
                counted.update(after)
                steps.append(StepZeros.of(i, p, before, sum(after.values())))
        if calibration is not None:
            names = ", ".join(
                dict.fromkeys(
                    p.step.method.name
                    for p in planned
                    if isinstance(p.step.method, CalibratedMethod)
                )
            )
            notes.append(f"{names} calibrated on {calibration.describe()}")
        return build_report(
            self.model,
            recipe,
            planned,
            self.baseline,
            self.quant_bits,
            seed=seed,
            notes=notes,
            zeros_before=self._undo.zeros_before,
            step_zeros=steps,
            zeros_now=counted,
            head=self._head,
            model_name=self.loaded.spec,
            family=self.loaded.family.value,
            calibration=calibration.to_dict() if calibration is not None else None,
        )

    def _prune(self, p: PlannedStep, seed: int) -> None:
        weights = []
        for layer in p.layers:
            module = self._modules[layer.name]
            self._count_zeros_before(layer.name, module)
            self._keep_for_restore(layer.name, module)
            weights.append(float_weight_out_in(module))
        p.step.method.prune(weights, seed)

    def _quantize(self, p: PlannedStep) -> None:
        method: QuantMethod = p.step.method
        for layer in p.layers:
            original = self._modules[layer.name]
            self._count_zeros_before(layer.name, original)
            replacement = method.quantize(original)
            self._set_module(layer.name, replacement)
            self._undo.modules.append((layer.name, original))
            self.quant_bits[layer.name] = method.weight_bits()

    def _calibrated(
        self,
        p: PlannedStep,
        calibration: Calibration,
        seed: int,
        advance: Callable[[int], None] | None = None,
    ) -> None:
        """Run the model block by block on the calibration tokens; compress each layer from
        the statistics of its inputs, keeping what restore() needs; `advance(1)` per layer."""
        method = p.step.method

        def compress(name: str, stats: InputStats) -> None:
            module = self._modules[name]
            self._count_zeros_before(name, module)
            if isinstance(method, PruneMethod):
                self._keep_for_restore(name, module)
                method.compress_layer(module, stats, seed)
            else:
                replacement = method.compress_layer(module, stats, seed)
                self._set_module(name, replacement)
                self._undo.modules.append((name, module))
                self.quant_bits[name] = method.weight_bits()
            if advance is not None:
                advance(1)

        calibrate_layers(
            self.model,
            self.loaded.family,
            [layer.name for layer in p.layers],
            method.statistic,
            calibration.tokens,
            compress,
        )

    def _keep_for_restore(self, name: str, module: nn.Module) -> None:
        """Copy a weight about to change in place, for `restore`; not the LM head's own copy
        after untying (`_untie_head`): restore puts the shared tensor back instead."""
        untied = self._undo.untied_head
        if name in self._undo.weights or (untied is not None and untied[0] == name):
            return
        self._undo.weights[name] = module.weight.detach().clone()

    def _zeros_now(self, p: PlannedStep) -> dict[str, int]:
        """Each of the step's layers' exact zeros now (each count is a pass over a weight,
        so `apply` counts a layer once before its step and once after, and reuses both)."""
        return {layer.name: zero_count(self._modules[layer.name]) for layer in p.layers}

    def _count_zeros_before(self, name: str, module: nn.Module) -> None:
        """Count the layer's exact zeros just before the recipe first changes it, so the
        report can tell zeros the checkpoint already had from zeros the recipe added."""
        if name not in self._undo.zeros_before:
            self._undo.zeros_before[name] = zero_count(module)

    def _head_and_tie(self) -> tuple[str, bool] | None:
        """The LM head's module name and whether it shares the input embeddings' weight."""
        head = next((layer.name for layer in self.layers if layer.role == "final_layer"), None)
        if head is None:
            return None
        embeddings = self.model.get_input_embeddings()
        tied = embeddings is not None and self._modules[head].weight is embeddings.weight
        return head, tied

    def _set_module(self, name: str, module: nn.Module) -> None:
        replace_module(self.model, name, module)
        self._modules[name] = module

    def module(self, name: str) -> nn.Module:
        """The module now at `name` (a quantized replacement after quantization)."""
        return self._modules[name]

    def _untie_head(self) -> str | None:
        """Give the LM head its own weight if it shares the input embeddings' tensor."""
        head = self.model.get_output_embeddings()
        embeddings = self.model.get_input_embeddings()
        if head is None or embeddings is None or head.weight is not embeddings.weight:
            return None
        name = next(n for n, m in self._modules.items() if m is head)
        config = self.model.config
        self._undo.untied_head = (name, head.weight, bool(config.tie_word_embeddings))
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        config.tie_word_embeddings = False
        return (
            f"the final layer ({name}) was tied to the input embeddings; it was untied first, "
            "so the embeddings are unchanged"
        )

    # -- restoring --------------------------------------------------------------------------
    def restore(self) -> None:
        """Undo the last recipe: original modules back, original weights copied back, re-tie."""
        undo = self._undo
        for name, module in reversed(undo.modules):
            self._set_module(name, module)
        with torch.no_grad():
            for name, saved in undo.weights.items():
                self._modules[name].weight.copy_(saved)
        if undo.untied_head is not None:
            name, shared, tied = undo.untied_head
            self._modules[name].weight = shared
            self.model.config.tie_word_embeddings = tied
        self.quant_bits = {}
        self._undo = _Undo()


def _describe_step(p: PlannedStep) -> str:
    """`gptq overall`: what a progress bar over a calibrated step's layers is labelled."""
    return f"{p.step.method.name} {p.step.group}"
