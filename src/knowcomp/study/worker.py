"""Run trials on one loaded model: compress, evaluate, restore. Used locally and on Ray."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from knowcomp.study.store import TrialOutcome
from knowcomp.study.trials import Trial

ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


def package_versions() -> dict[str, str]:
    """The versions that decide a result, stored with every trial."""
    versions = {"python": platform.python_version()}
    for package in ("knowcomp", "torch", "transformers", "torchao"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


class ModelWorker:
    """One model, loaded once; `run(trial)` compresses it, evaluates it and restores it."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        device_map: str | None = None,
        data_dir: Path | None = None,
        similarity: int = 0,
    ) -> None:
        from knowcomp.compress import CompressionSession
        from knowcomp.models import load_model

        self.loaded = load_model(model, dtype=dtype, device=device, device_map=device_map)
        self.session = CompressionSession(self.loaded)
        self.data_dir = data_dir
        self.similarity_texts = similarity
        self._reference: Any = None  # the uncompressed outputs, captured on first use
        self.params_model = sum(p.numel() for p in self.loaded.model.parameters())
        self.params_linear = sum(b.weight_params for b in self.session.baseline.values())
        self.bytes_linear = sum(b.bytes for b in self.session.baseline.values())
        self.versions = package_versions()

    def run(
        self,
        trial: Trial,
        probes: list[str],
        *,
        study: str,
        spec_hash: str,
        progress: ProgressFactory | None = None,
    ) -> TrialOutcome:
        """Compress with the trial's recipe (restoring first), then run `probes` on it."""
        from knowcomp.probes.base import RunOptions
        from knowcomp.probes.registry import get_probe

        start = time.perf_counter()
        reference = self._similarity_reference() if trial.recipe is not None else None
        row = self._compress(trial)
        similarity = self._similarity(reference)
        results = []
        for name in probes:
            probe = get_probe(name)
            options = RunOptions(
                limit=trial.limit, seed=trial.seed, data_dir=self.data_dir,
                lama_mode=trial.lama_mode,
            )  # fmt: skip
            if progress is not None:
                step = progress(name, probe.count(options))
                options = RunOptions(**{**options.__dict__, "progress": step})
            results.append(probe.run(self.loaded, options).to_dict())
        self.session.restore()
        row.update(
            trial_key=trial.key, study=study, spec_hash=spec_hash, model=trial.model,
            family=self.loaded.family.value, sweep=trial.sweep, recipe=trial.recipe,
            level=trial.level, seed=trial.seed, limit_items=trial.limit,
            lama_mode=trial.lama_mode, dtype=trial.dtype, params_linear=self.params_linear,
            params_model=self.params_model, versions=self.versions,
            seconds=time.perf_counter() - start,
        )  # fmt: skip
        return TrialOutcome(row, results, similarity)

    def _similarity_reference(self) -> Any:
        """The uncompressed model's per-layer outputs on the similarity texts, captured once
        per model (None when the study asks for no similarity)."""
        if not self.similarity_texts:
            return None
        if self._reference is None:
            from knowcomp.analysis import ReferenceStates, default_texts, make_batches

            texts = default_texts(self.similarity_texts, data_dir=self.data_dir)
            batches = make_batches(self.loaded.tokenizer, texts)
            self.session.restore()
            self._reference = ReferenceStates.capture(self.loaded.model, batches)
        return self._reference

    def _similarity(self, reference: Any) -> list[dict[str, Any]]:
        """Per-layer similarity of the model as it is now to `reference` (rows for the store)."""
        if reference is None:
            return []
        from knowcomp.analysis import layerwise_similarity

        return layerwise_similarity(reference, self.loaded.model).rows()

    def _compress(self, trial: Trial) -> dict[str, Any]:
        """Apply the trial's recipe; the trial row's compression fields, counted from weights."""
        from knowcomp.compress import parse_recipe
        from knowcomp.compress.report import layer_stats

        if trial.recipe is None:
            self.session.restore()
            return {"sparsity": 0.0, "params_compressed": 0, "bytes_before": self.bytes_linear,
                    "bytes_after": self.bytes_linear, "compression": None}  # fmt: skip
        recipe = parse_recipe(trial.recipe)
        touched = {layer.name for p in self.session.plan(recipe) for layer in p.layers}
        report = self.session.apply(recipe, seed=trial.seed)
        stats = [
            layer_stats(self.session.module(n), self.session.quant_bits.get(n)) for n in touched
        ]
        params = sum(s.weight_params for s in stats)
        return {
            "sparsity": sum(s.zeros for s in stats) / params if params else 0.0,
            "params_compressed": params,
            "bytes_before": report.total.bytes_before,
            "bytes_after": report.total.bytes_after_compressed,
            "compression": report.to_dict(),
        }
