"""Run trials on one loaded model: compress, evaluate, restore. Used locally and on Ray.

A trial with a recover step trains its adapter on the compressed model (or loads the one a
previous run saved for the same trial key), evaluates with the adapter attached, then detaches
it: the compressed weights are never changed by recovery. The compression of one recipe and
seed is kept from one trial to the next, so a recipe's compressed trial and its recovered
trials compress once (GPTQ or SparseGPT take minutes on a CPU).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from knowcomp.pipeline import Pipeline, ProgressFactory
from knowcomp.store import TrialOutcome
from knowcomp.study.trials import Trial


class ModelWorker:
    """One model in a `Pipeline`, loaded once; `run(trial)` maps a trial onto its steps:
    compress (or restore), attach the trial's adapter, probe, and measure similarity."""

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
        calibration: Any = None,
        reuse_budget_mb: float = 1024,
        batch_tokens: int | None = None,
        ablation: bool = False,
    ) -> None:
        from knowcomp.compress.calibration import CalibrationSpec
        from knowcomp.models.placement import ChosenPlacement, resolve_auto

        placement = ChosenPlacement(*resolve_auto(device, dtype), device_map)
        folder = str(data_dir) if data_dir else None
        text = (
            CalibrationSpec(
                calibration.source, calibration.nsamples, calibration.seqlen, None, folder
            )
            if calibration is not None
            else CalibrationSpec(data_dir=folder)
        )
        self.pipeline = Pipeline(model, placement=placement, data_dir=data_dir, calibration=text,
                                 reuse_budget_mb=reuse_budget_mb)  # fmt: skip
        self.loaded = self.pipeline.loaded
        self.data_dir = data_dir
        self.similarity_texts = similarity
        self.adapters = adapters  # folder for trained adapters (one per trial key), or None
        self.batch_tokens = batch_tokens  # padded tokens per probe batch; None: device default
        self._reference: Any = None  # the uncompressed outputs, captured on first use
        self.ablation = ablation  # IDP trials: score each prompt alone and their concatenation

    def run(
        self,
        trial: Trial,
        probes: list[str],
        *,
        study: str,
        spec_hash: str,
        progress: ProgressFactory | None = None,
        adaptive: Any = None,
    ) -> TrialOutcome:
        """Compress with the trial's recipe (restoring first), then run `probes` on it."""
        from knowcomp.probes.base import RunOptions
        from knowcomp.probes.batching import describe_budgets
        from knowcomp.probes.registry import get_probe

        start = time.perf_counter()
        pipeline = self.pipeline
        reference = self._similarity_reference() if trial.recipe is not None else None
        row = pipeline.compress(trial.recipe, trial.seed, progress).row
        adapter, row["recovery"] = self._recovery(trial, progress)
        similarity = []  # of a compressed or recovered trial (adapter attached) to the original
        if reference is not None:
            similarity = pipeline.similarity(reference, adapter=adapter).rows()
        options = RunOptions(
            limit=trial.limit, seed=trial.seed, data_dir=self.data_dir,
            lama_mode=trial.lama_mode, lama_protocol=trial.lama_protocol, add_bos=trial.add_bos,
            max_tokens=self.batch_tokens,
        )  # fmt: skip
        chosen = [get_probe(name) for name in probes]
        from knowcomp.reuse import for_trial

        reuse = for_trial(pipeline.prefix, self.loaded, pipeline.session, trial)
        score = None
        if adaptive is not None:  # `study.adaptive.AdaptiveRun`: chunk by chunk, stop when clear

            def score(probe: Any, chosen: Any, run: Any) -> Any:
                return adaptive.run_probe(
                    trial, probe, chosen, run, lambda o: self._uncompressed(trial, probe, o)
                )

        if getattr(adapter, "choices", None) is not None:
            adapter.choices = None  # IDP: count the prompts chosen on the probes' items only
        evaluation = pipeline.evaluate(
            chosen, options, adapter=adapter, progress=progress, reuse=reuse, score=score
        )
        # an adaptive probe's result is already the stored dict
        results = [r if isinstance(r, dict) else r.to_dict() for r in evaluation.results]
        versions = {
            **pipeline.versions,
            "knowcomp input rule": pipeline.input_rule(trial.add_bos),
            "knowcomp batch tokens": describe_budgets(results, self.batch_tokens),
        }
        if adapter is not None and getattr(adapter, "choices", None) is not None:
            row["recovery"]["idp_choices"] = adapter.choices.tolist()  # prompt use counts
        if self.ablation and (row.get("recovery") or {}).get("method") == "idp":
            row["recovery"]["ablation"] = self._ablation(adapter, chosen, options, results,
                                                         progress)  # fmt: skip
        row.update(
            trial_key=trial.key, study=study, spec_hash=spec_hash, model=trial.model,
            family=pipeline.family.value, sweep=trial.sweep, recipe=trial.recipe,
            level=trial.level, seed=trial.seed, limit_items=trial.limit,
            lama_mode=trial.lama_mode, lama_protocol=trial.lama_protocol, dtype=trial.dtype,
            params_linear=pipeline.params_linear, params_model=pipeline.params_model,
            versions=versions, seconds=time.perf_counter() - start,
        )  # fmt: skip
        return TrialOutcome(row, results, similarity)

    def _ablation(self, adapter: Any, chosen: list[Any], options: Any, results: list[dict],
                  progress: ProgressFactory | None) -> dict[str, dict[str, Any]]:  # fmt: skip
        """Variant -> probe -> metrics: each prompt alone, their concatenation, then IDP (the
        trial's own results), on the same items (`recovery.ablation`)."""
        from knowcomp.recovery.ablation import IDP_ROW, ablation_variants

        out: dict[str, dict[str, Any]] = {}
        for variant in ablation_variants(adapter):
            if variant.name == IDP_ROW:
                found = results
            else:
                found = [r.to_dict(with_records=False) for r in self.pipeline.evaluate(
                    chosen, options, adapter=variant, progress=progress).results]  # fmt: skip
            out[variant.name] = {r["probe"]: r["metrics"] for r in found}
        return out

    def _uncompressed(self, trial: Trial, probe: Any, options: Any) -> Any:
        """`probe` run on the uncompressed model, the trial's compression applied again after
        (adaptive evaluation extends a baseline this way, in the middle of a trial)."""
        return self.pipeline.uncompressed_run(probe, options, trial.recipe, trial.seed)

    def _similarity_reference(self) -> Any:
        """The uncompressed model's per-layer outputs on the similarity texts, captured once
        per model (None when the study asks for no similarity)."""
        if not self.similarity_texts:
            return None
        if self._reference is None:
            from knowcomp.analysis import default_texts, make_batches

            texts = default_texts(self.similarity_texts, data_dir=self.data_dir)
            batches = make_batches(self.loaded.tokenizer, texts)
            self._reference = self.pipeline.reference_states(batches)
        return self._reference

    def _recovery(
        self, trial: Trial, progress: ProgressFactory | None
    ) -> tuple[Any, dict[str, Any] | None]:
        """The trial's adapter, trained on the model as compressed now (or loaded, when a
        previous run saved it), and what the trial row records of it; (None, None) without
        a recover step."""
        if trial.recover is None:
            return None, None
        from knowcomp.recovery import RecoveryError, parse_method
        from knowcomp.recovery.adapters import RECORD

        settings = parse_method(trial.recover)
        train = json.loads(trial.train or "{}")
        train_settings = trial_train_settings(trial, self.data_dir)
        folder = self.adapters / trial.key if self.adapters is not None else None
        adapter, reused = None, False
        if folder is not None and (folder / RECORD).is_file():
            try:
                adapter = self.pipeline.load_adapter(folder)
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
                adapter = self.pipeline.train_adapter(settings, train_settings, trial.recipe, step)
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


def trial_train_settings(trial: Trial, data_dir: Path | None) -> Any:
    """The `recovery.TrainSettings` of a trial with a recover step."""
    from knowcomp.recovery import TrainSettings

    train = json.loads(trial.train or "{}")
    return TrainSettings(train["tokens"], train["seqlen"], train["batch_size"], trial.seed,
                         train["calibration"], str(data_dir) if data_dir else None)  # fmt: skip
