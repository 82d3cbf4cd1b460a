"""Run a study: validate, skip what the store already has, run the rest, write trial by trial."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

from knowcomp.study.spec import StudySpec
from knowcomp.study.store import ResultsStore, TrialOutcome
from knowcomp.study.trials import Trial, validate


@dataclass(frozen=True)
class PendingTrial:
    trial: Trial
    probes: list[str]  # the probes the store does not have yet for this trial


class RunListener:
    """Callbacks for progress display; the default does nothing."""

    def started(self, pending: list[PendingTrial], skipped: int) -> None: ...

    def model_loading(self, model: str) -> None: ...

    def trial_started(self, trial: Trial) -> None: ...

    def probe_started(self, probe: str, total: int) -> Callable[[int], None] | None:
        return None

    def trial_finished(self, trial: Trial, outcome: TrialOutcome) -> None: ...


@dataclass
class RunSummary:
    trials: int
    skipped: int
    ran: int = 0
    rows_added: int = 0
    seconds: float = 0.0
    output: str = ""
    models: list[str] = field(default_factory=list)


def pending_trials(spec: StudySpec, trials: list[Trial], store: ResultsStore) -> list[PendingTrial]:
    pending = []
    for trial in trials:
        missing = [p for p in spec.probes if p not in store.done_probes(trial.key)]
        if missing:
            pending.append(PendingTrial(trial, missing))
    return pending


def run_study(
    spec: StudySpec,
    *,
    executor: str = "local",
    listener: RunListener | None = None,
    ray_address: str | None = None,
    workers_per_model: int = 1,
) -> RunSummary:
    """Run every trial of `spec` the store at `spec.output` does not have yet."""
    listener = listener or RunListener()
    trials = validate(spec)  # everything checkable is checked before the store is touched
    with ResultsStore(spec.output) as store:
        pending = pending_trials(spec, trials, store)
        summary = RunSummary(len(trials), len(trials) - len(pending), output=str(spec.output),
                             models=list(spec.models))  # fmt: skip
        listener.started(pending, summary.skipped)
        start = time.perf_counter()
        if executor == "local":
            outcomes = _run_local(spec, pending, listener)
        elif executor == "ray":
            from knowcomp.study.ray_executor import run_on_ray

            outcomes = run_on_ray(spec, pending, address=ray_address, workers=workers_per_model)
        else:
            raise ValueError(f"unknown executor {executor!r}")
        for trial, outcome in outcomes:  # the driver is the only writer
            summary.rows_added += store.write(outcome)
            summary.ran += 1
            listener.trial_finished(trial, outcome)
        summary.seconds = time.perf_counter() - start
    return summary


def _run_local(spec: StudySpec, pending: list[PendingTrial], listener: RunListener):
    """Trials grouped by model: each model loads once and is restored between trials."""
    from knowcomp.study.worker import ModelWorker

    spec_hash = spec.spec_hash()
    for model, group in groupby(pending, key=lambda p: p.trial.model):
        listener.model_loading(model)
        worker = ModelWorker(model, dtype=spec.dtype, device=spec.device,
                             device_map=spec.device_map, data_dir=spec.data_dir)  # fmt: skip
        for item in group:
            listener.trial_started(item.trial)
            outcome = worker.run(item.trial, item.probes, study=spec.name, spec_hash=spec_hash,
                                 progress=listener.probe_started)  # fmt: skip
            yield item.trial, outcome
        del worker
