"""The one load -> compress -> attach an adapter -> probe sequence, for commands and studies.

`knowcomp eval`, `compress`, `recover` and `similarity` and a study's workers all run a model
through a `Pipeline`: it loads the model once on the chosen device and dtype, compresses it
with a recipe (keeping that compression for the next call with the same recipe and seed, and
restoring the touched tensors before any other), trains or loads a recovery adapter and
attaches it, runs probes with a progress bar each, and measures layer-wise similarity to the
uncompressed model. The commands only parse their options and print; the study worker maps a
trial onto the same calls, so a one-shot command and a one-trial study compute the same
numbers (`tests/test_pipeline.py` checks that they are bit-identical).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# ProgressFactory: progress(description, total) -> advance(n) or None, one bar per probe,
# training run or calibrated compression step (the compression session's own type)
from knowcomp.compress.session import ProgressFactory
from knowcomp.models.placement import ChosenPlacement
from knowcomp.pipeline.provenance import input_rule_version, package_versions


class Display:
    """How a pipeline run shows its progress: each method is a context yielding a progress
    factory (or None). The default shows nothing; the CLI's shows rich bars on stderr, one
    display at a time."""

    def work(self, label: str = "") -> AbstractContextManager[ProgressFactory | None]:
        """Probes (items) and training runs (tokens); `label` prefixes each bar."""
        return nullcontext()

    def compression(self) -> AbstractContextManager[ProgressFactory | None]:
        """A recipe's compression (a bar per calibrated step, in layers)."""
        return nullcontext()

    def training(
        self, description: str, tokens: int
    ) -> AbstractContextManager[Callable[[int, float], None] | None]:
        """A training run over `tokens`; yields step(tokens done, loss)."""
        return nullcontext()


@dataclass
class Compressed:
    """What one compression did, counted from the weights: the trial row's compression fields
    (`row`) and the full report (None for the uncompressed model or a kept compression)."""

    row: dict[str, Any]
    report: Any = None


@dataclass
class Evaluation:
    """The probes' results on the model as it is (compressed, with an adapter or not)."""

    results: list[Any] = field(default_factory=list)  # ProbeResult per probe, in order
    seconds: float = 0.0


class Pipeline:
    """One model, loaded once; compressed, given an adapter and probed on request."""

    def __init__(
        self,
        model: str,
        *,
        placement: ChosenPlacement | None = None,
        data_dir: Path | None = None,
        calibration: Any = None,
        require_tokenizer: bool = True,
        reuse_budget_mb: float = 0,
    ) -> None:
        from knowcomp.compress import CompressionSession
        from knowcomp.compress.calibration import CalibrationSpec
        from knowcomp.models import load_model

        self.name = model
        self.placement = placement or ChosenPlacement("cpu", "float32", None)
        self.data_dir = data_dir
        self.loaded = load_model(
            model, require_tokenizer=require_tokenizer, **self.placement.load_kwargs()
        )
        if calibration is None:
            calibration = CalibrationSpec(data_dir=str(data_dir) if data_dir else None)
        self.session = CompressionSession(self.loaded, calibration=calibration)
        self._kept: tuple[tuple[str, int], dict[str, Any]] | None = None
        self.params_model = sum(p.numel() for p in self.loaded.model.parameters())
        self.params_linear = sum(b.weight_params for b in self.session.baseline.values())
        self.bytes_linear = sum(b.bytes for b in self.session.baseline.values())
        self.versions = {**package_versions(), **self.placement.record()}
        from knowcomp.reuse import PrefixCache

        # the baseline's states, for trials that change only what comes after them; 0: off
        self.prefix = PrefixCache(int(reuse_budget_mb * 2**20))

    @property
    def family(self) -> Any:
        return self.loaded.family

    # -- compression ---------------------------------------------------------------------
    def plan(self, recipe: Any, seed: int = 0) -> None:
        """Check `recipe` against this model before any weight changes (one-line errors)."""
        self.session.plan(_parsed(recipe), seed=seed)

    def compress(
        self, recipe: Any, seed: int = 0, progress: ProgressFactory | None = None
    ) -> Compressed:
        """Compress with `recipe` (a `Recipe`, its text, or None for the uncompressed model).

        The model stays compressed afterwards, so a next call with the same recipe and seed
        (a recipe's recovered trials) does not compress again; any other call restores the
        touched tensors first."""
        if recipe is None:
            self.restore()
            return Compressed({"sparsity": 0.0, "params_compressed": 0,
                               "bytes_before": self.bytes_linear,
                               "bytes_after": self.bytes_linear, "compression": None})  # fmt: skip
        parsed = _parsed(recipe)
        key = (parsed.to_compact(), seed)
        if self._kept is not None and self._kept[0] == key:
            return Compressed(json.loads(json.dumps(self._kept[1])))  # a copy of the kept row
        self.restore()
        report = self.session.apply(parsed, seed=seed, progress=progress)
        report.placement = self.placement.record()
        compressed = report.compressed  # the union of the layers the recipe touched
        row = {
            "sparsity": compressed.sparsity,  # zeros there before included; see `compression`
            "params_compressed": compressed.weight_params,
            "bytes_before": report.total.bytes_before,
            "bytes_after": report.total.bytes_after_compressed,
            "compression": report.to_dict(),
        }
        self._kept = (key, json.loads(json.dumps(row)))
        return Compressed(row, report)

    def restore(self) -> None:
        """Put back every tensor and module the last compression changed."""
        self.session.restore()
        self._kept = None

    # -- recovery ------------------------------------------------------------------------
    def train_adapter(
        self,
        settings: Any,
        train: Any,
        recipe: str | None,
        progress: Callable[[int, float], None] | None = None,
    ) -> Any:
        """Train a recovery adapter on the model as it is now (compressed); the model's own
        weights never change."""
        from knowcomp.recovery import recover

        return recover(self.loaded, settings, train, progress, recipe=recipe)

    def load_adapter(self, folder: Path) -> Any:
        from knowcomp.recovery import load_adapter

        return load_adapter(folder, self.loaded.model)

    def attached(self, adapter: Any) -> Any:
        """A context in which `adapter` (or nothing, for None) is attached to the model."""
        return adapter.attached(self.loaded.model) if adapter is not None else nullcontext()

    # -- probing -------------------------------------------------------------------------
    def evaluate(
        self,
        probes: list[Any],
        options: Any,
        *,
        adapter: Any = None,
        progress: ProgressFactory | None = None,
        after_each: Callable[[list[Any]], None] | None = None,
        label: str = "",
        reuse: Any = None,
        score: Callable[[Any, Any, Callable[[Any], Any]], Any] | None = None,
    ) -> Evaluation:
        """Run `probes` (Probe objects) on the model as it is, with `adapter` attached;
        `after_each(results so far)` after every probe (to save what is done). `reuse` (a
        `reuse.TrialReuse`) records into or serves from the prefix cache. `score(probe, options,
        run)` replaces the one call `run(options)` per probe (adaptive evaluation scores a
        probe chunk by chunk through it, and extends the baseline in between with
        `uncompressed_run`, so the adapter is then attached around each `run` call only). The
        uncompressed model without an adapter reads its
        results from the baseline cache (`knowcomp.cache`) where they are stored, and stores
        them there (a cached baseline leaves the prefix cache empty: later trials then run
        whole, with the same results)."""
        from knowcomp.cache import cached_probe_run

        start = time.perf_counter()
        results: list[Any] = []
        baseline = self._kept is None and adapter is None  # uncompressed, nothing attached
        whole = self.attached(adapter) if score is None else nullcontext()
        each = (lambda: nullcontext()) if score is None else (lambda: self.attached(adapter))
        with whole:
            for probe in probes:
                run_options = options
                if progress is not None:
                    step = progress(f"{label}{probe.name}", probe.count(options))
                    run_options = replace(options, progress=step)

                def run(chosen: Any, probe: Any = probe) -> Any:
                    compute = None  # a prefix cache records or serves through `reuse`
                    if reuse is not None and reuse.mode != "plain":
                        compute = lambda o: reuse.run(probe, self.loaded, o)  # noqa: E731
                    with each():
                        return cached_probe_run(
                            self.loaded, probe, chosen, baseline=baseline, run=compute
                        )

                results.append(
                    run(run_options) if score is None else score(probe, run_options, run)
                )
                if after_each is not None:
                    after_each(results)
        return Evaluation(results, time.perf_counter() - start)

    def uncompressed_run(self, probe: Any, options: Any, recipe: Any, seed: int = 0) -> Any:
        """`probe` on the uncompressed model (from the baseline cache where it has the result),
        with `recipe` applied again after: adaptive evaluation extends a baseline this way in
        the middle of a compressed model's evaluation (no adapter may be attached)."""
        from knowcomp.cache import cached_probe_run

        self.restore()
        try:
            return cached_probe_run(self.loaded, probe, options, baseline=True)
        finally:
            self.compress(recipe, seed)

    def input_rule(self, add_bos: str) -> str:
        """The input rule the probes are scored under, for the record of a result."""
        return input_rule_version(self.loaded, add_bos)

    # -- similarity ----------------------------------------------------------------------
    def reference_states(self, batches: list[Any], progress: Callable[[int], None] | None = None):
        """The uncompressed model's per-layer outputs on `batches` (restores it first)."""
        from knowcomp.analysis import ReferenceStates

        self.restore()
        return ReferenceStates.capture(self.loaded.model, batches, progress=progress)

    def similarity(
        self,
        reference: Any,
        *,
        adapter: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Layer-wise similarity of the model as it is now (with `adapter` attached, when
        given) to the uncompressed `reference`."""
        from knowcomp.analysis import layerwise_similarity

        with self.attached(adapter):
            return layerwise_similarity(reference, self.loaded.model, progress=progress)


def _parsed(recipe: Any) -> Any:
    from knowcomp.compress import parse_recipe

    return parse_recipe(recipe) if isinstance(recipe, str) else recipe
