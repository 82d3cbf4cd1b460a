"""Run trials on one loaded model: compress, evaluate, restore. Used locally and on Ray.

A trial with a recover step trains its adapter on the compressed model (or loads the one a
previous run saved for the same trial key), evaluates with the adapter attached, then detaches
it: the compressed weights are never changed by recovery. The compression of one recipe and
seed is kept from one trial to the next, so a recipe's compressed trial and its recovered
trials compress once (GPTQ or SparseGPT take minutes on a CPU).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from importlib import metadata
from pathlib import Path
from typing import Any

from knowcomp.models.family import Family
from knowcomp.store import TrialOutcome
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
        adapters: Path | None = None,
    ) -> None:
        from knowcomp.compress import CompressionSession
        from knowcomp.compress.calibration import CalibrationSpec
        from knowcomp.models import load_model

        self.loaded = load_model(model, dtype=dtype, device=device, device_map=device_map)
        calibration = CalibrationSpec(data_dir=str(data_dir) if data_dir else None)
        self.session = CompressionSession(self.loaded, calibration=calibration)
        self.data_dir = data_dir
        self.similarity_texts = similarity
        self.adapters = adapters  # folder for trained adapters (one per trial key), or None
        self._reference: Any = None  # the uncompressed outputs, captured on first use
        self._applied: tuple[tuple[str, int], dict[str, Any]] | None = None  # kept compression
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
        from knowcomp.cache import cached_probe_run
        from knowcomp.probes.base import RunOptions
        from knowcomp.probes.registry import get_probe

        start = time.perf_counter()
        measure = trial.recipe is not None and trial.recover is None
        reference = self._similarity_reference() if measure else None
        row = self._compress(trial, progress)
        similarity = self._similarity(reference)
        adapter, row["recovery"] = self._recovery(trial, progress)
        results = []
        with adapter.attached(self.loaded.model) if adapter is not None else nullcontext():
            for name in probes:
                probe = get_probe(name)
                options = RunOptions(
                    limit=trial.limit, seed=trial.seed, data_dir=self.data_dir,
                    lama_mode=trial.lama_mode, lama_protocol=trial.lama_protocol,
                    add_bos=trial.add_bos,
                )  # fmt: skip
                if progress is not None:
                    step = progress(name, probe.count(options))
                    options = RunOptions(**{**options.__dict__, "progress": step})
                baseline = trial.recipe is None and adapter is None  # cached once, ever
                results.append(cached_probe_run(self.loaded, probe, options,
                                                baseline=baseline).to_dict())  # fmt: skip
        if adapter is not None and getattr(adapter, "last", None) is not None:
            row["recovery"]["idp_choices"] = adapter.last.choices.tolist()  # prompt use counts
        row.update(
            trial_key=trial.key, study=study, spec_hash=spec_hash, model=trial.model,
            family=self.loaded.family.value, sweep=trial.sweep, recipe=trial.recipe,
            level=trial.level, seed=trial.seed, limit_items=trial.limit,
            lama_mode=trial.lama_mode, lama_protocol=trial.lama_protocol, dtype=trial.dtype,
            params_linear=self.params_linear,
            params_model=self.params_model, versions=self._versions(trial),
            seconds=time.perf_counter() - start,
        )  # fmt: skip
        return TrialOutcome(row, results, similarity)

    def _versions(self, trial: Trial) -> dict[str, str]:
        """Package versions, and the input rule the trial's probes were scored under."""
        from knowcomp.probes.inputs import INPUT_RULE, input_rule

        rule = f"{INPUT_RULE}"
        if self.loaded.family is Family.DECODER:
            bos = input_rule(self.loaded.tokenizer, trial.add_bos).add_bos
            rule += f" (BOS {'first' if bos else 'none'}, add_bos {trial.add_bos})"
        return {**self.versions, "knowcomp input rule": rule}

    def _similarity_reference(self) -> Any:
        """The uncompressed model's per-layer outputs on the similarity texts, captured once
        per model (None when the study asks for no similarity)."""
        if not self.similarity_texts:
            return None
        if self._reference is None:
            from knowcomp.analysis import ReferenceStates, default_texts, make_batches

            texts = default_texts(self.similarity_texts, data_dir=self.data_dir)
            batches = make_batches(self.loaded.tokenizer, texts)
            self._restore()
            self._reference = ReferenceStates.capture(self.loaded.model, batches)
        return self._reference

    def _similarity(self, reference: Any) -> list[dict[str, Any]]:
        """Per-layer similarity of the model as it is now to `reference` (rows for the store)."""
        if reference is None:
            return []
        from knowcomp.analysis import layerwise_similarity

        return layerwise_similarity(reference, self.loaded.model).rows()

    def _restore(self) -> None:
        self.session.restore()
        self._applied = None

    def _compress(self, trial: Trial, progress: ProgressFactory | None = None) -> dict[str, Any]:
        """Apply the trial's recipe; the trial row's compression fields, counted from weights.
        The model stays compressed after the trial, for a next trial of the same recipe and
        seed (its recovered trials); any other trial restores it first."""
        from knowcomp.compress import parse_recipe

        if trial.recipe is None:
            self._restore()
            return {"sparsity": 0.0, "params_compressed": 0, "bytes_before": self.bytes_linear,
                    "bytes_after": self.bytes_linear, "compression": None}  # fmt: skip
        if self._applied is not None and self._applied[0] == (trial.recipe, trial.seed):
            return json.loads(json.dumps(self._applied[1]))  # a copy of the kept row
        self._applied = None
        report = self.session.apply(parse_recipe(trial.recipe), seed=trial.seed,
                                    progress=progress)  # fmt: skip
        compressed = report.compressed  # the union of the layers the recipe touched
        row = {
            "sparsity": compressed.sparsity,  # zeros there before included; see `compression`
            "params_compressed": compressed.weight_params,
            "bytes_before": report.total.bytes_before,
            "bytes_after": report.total.bytes_after_compressed,
            "compression": report.to_dict(),
        }
        self._applied = ((trial.recipe, trial.seed), json.loads(json.dumps(row)))
        return row

    def _recovery(
        self, trial: Trial, progress: ProgressFactory | None
    ) -> tuple[Any, dict[str, Any] | None]:
        """The trial's adapter, trained on the model as compressed now (or loaded, when a
        previous run saved it), and what the trial row records of it; (None, None) without
        a recover step."""
        if trial.recover is None:
            return None, None
        from knowcomp.recovery import RecoveryError, load_adapter, parse_method, recover
        from knowcomp.recovery.adapters import RECORD

        settings = parse_method(trial.recover)
        train = json.loads(trial.train or "{}")
        train_settings = _train_settings(train, trial.seed, self.data_dir)
        folder = self.adapters / trial.key if self.adapters is not None else None
        adapter, reused = None, False
        if folder is not None and (folder / RECORD).is_file():
            try:
                adapter = load_adapter(folder, self.loaded.model)
                reused = parse_method(adapter.info.settings) == settings
            except (RecoveryError, OSError, ValueError, KeyError):
                adapter = None  # unreadable: train again and write over it
            if not reused:
                adapter = None
        if adapter is None:
            step = None
            if progress is not None:
                tokens = train_settings.blocks * train_settings.seqlen
                advance = progress(f"training {trial.method}", tokens)
                step = (lambda n, _loss, f=advance: f(n)) if advance is not None else None
            try:
                adapter = recover(self.loaded, settings, train_settings, step, recipe=trial.recipe)
            except RecoveryError as err:
                raise RecoveryError(f"trial {trial.label} on {trial.model}: {err}") from None
            if folder is not None:
                adapter.save(folder, self.loaded.model)
        info = adapter.info
        log = {k: info.log.get(k) for k in ("steps", "tokens", "seconds", "first_loss",
                                             "last_loss", "losses")}  # fmt: skip
        return adapter, {
            "method": settings.method, "label": trial.method, "settings": info.settings,
            "trainable_params": info.trainable_params, "train": {**train, "seed": trial.seed},
            "log": log, "adapter": str(folder) if folder is not None else None,
            "reused": reused,
        }  # fmt: skip


def _train_settings(train: dict[str, Any], seed: int, data_dir: Path | None) -> Any:
    from knowcomp.recovery import TrainSettings

    return TrainSettings(train["tokens"], train["seqlen"], train["batch_size"], seed,
                         train["calibration"], str(data_dir) if data_dir else None)  # fmt: skip
