"""Run a study: validate, skip what the store already has, run the rest, write trial by trial."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby

from knowcomp.store import Owner, ResultsStore, TrialOutcome, process_alive
from knowcomp.study.spec import StudySpec
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

    def trial_left(self, trial: Trial, holder: str) -> None:
        """Another live run holds this trial; it computes and stores it."""


@dataclass
class RunSummary:
    trials: int
    skipped: int
    ran: int = 0
    rows_added: int = 0
    seconds: float = 0.0
    output: str = ""
    models: list[str] = field(default_factory=list)
    left_to_others: dict[str, int] = field(default_factory=dict)  # owner -> trials unfinished
    stored_by_others: int = 0  # trials another run held and had stored by the end of this one


def _done(store: ResultsStore, trial: Trial, precision: float | None = None) -> set[str]:
    """The probes the store has for `trial` (a LAMA result under another protocol than the
    default is stored as `probe@protocol`), as far as a run at `precision` needs them (an
    adaptive result that stopped short of it, or of every item without one, is not done)."""
    from knowcomp.pipeline.adaptive import Sequential, settled
    from knowcomp.probes.lama.protocols import probe_of

    if precision is not None and not store.has_trial(trial.key):
        return set()  # a baseline extended by other trials on Ray, before it ran itself
    return {
        probe_of(name) for name in store.done_probes(trial.key)
        if settled(Sequential.of(store.sequential(trial.key, name)), precision, trial.is_baseline)
    }  # fmt: skip


def pending_trials(spec: StudySpec, trials: list[Trial], store: ResultsStore) -> list[PendingTrial]:
    pending = []
    for trial in trials:
        missing = [p for p in spec.probes if p not in _done(store, trial, spec.precision)]
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
    reuse_budget_mb: float | None = None,
) -> RunSummary:
    """Run every trial of `spec` the store at `spec.output` does not have yet."""
    listener = listener or RunListener()
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor {executor!r}")
    trials = validate(spec)  # everything checkable is checked before the store is touched
    owner = Owner.me()
    with ResultsStore(spec.output) as store:
        pending = pending_trials(spec, trials, store)
        summary = RunSummary(len(trials), len(trials) - len(pending), output=str(spec.output),
                             models=list(spec.models))  # fmt: skip
        listener.started(pending, summary.skipped)
        start = time.perf_counter()
        left: list[tuple[PendingTrial, Owner]] = []

        def claim(item: PendingTrial) -> PendingTrial | None:
            """The trial with the probes this run should compute, or None: another live run
            holds it, or finished it since this run started."""
            holder = store.claim(item.trial.key, owner)
            if holder is not None:
                listener.trial_left(item.trial, holder.describe())
                left.append((item, holder))
                return None
            done = _done(store, item.trial, spec.precision)
            missing = [p for p in item.probes if p not in done]
            if not missing:
                listener.trial_left(item.trial, "another run")
                summary.skipped += 1
                return None
            return PendingTrial(item.trial, missing)

        try:
            if executor == "local":
                outcomes = _run_local(spec, pending, listener, claim, store, reuse_budget_mb)
            else:
                from knowcomp.study.ray_executor import run_on_ray

                claimed = [c for c in map(claim, pending) if c is not None]
                read = None
                if spec.precision is not None:  # the stored results each trial starts from
                    read = lambda key, probe: _stored(store, key, probe)  # noqa: E731
                outcomes = run_on_ray(spec, claimed, address=ray_address,
                                      workers=workers_per_model,
                                      reuse_budget_mb=reuse_budget_mb, read=read)  # fmt: skip
            for trial, outcome in outcomes:  # the driver is the only writer
                summary.rows_added += store.write(outcome)
                summary.ran += 1
                listener.trial_finished(trial, outcome)
        finally:
            store.release(owner)  # an interrupted run leaves its unfinished trials to the next
        _count_left(store, left, summary)
        summary.seconds = time.perf_counter() - start
    return summary


def _count_left(
    store: ResultsStore, left: list[tuple[PendingTrial, Owner]], summary: RunSummary
) -> None:
    """Split the trials left to other runs into those stored by now and those still unfinished
    (named by their holder, marked when its process has ended)."""
    for item, holder in left:
        if not set(item.probes) - store.done_probes(item.trial.key):
            summary.stored_by_others += 1
            continue
        name = holder.describe()
        if holder.host == socket.gethostname() and not process_alive(holder.pid):
            name += ", which has ended"
        summary.left_to_others[name] = summary.left_to_others.get(name, 0) + 1


def _run_local(
    spec: StudySpec,
    pending: list[PendingTrial],
    listener: RunListener,
    claim: Callable[[PendingTrial], PendingTrial | None],
    store: ResultsStore,
    reuse_budget_mb: float | None = None,
) -> Iterator[tuple[Trial, TrialOutcome]]:
    """Trials grouped by model: each model loads once (when its first trial is claimed) and
    is restored between trials."""
    from knowcomp.study.adaptive import AdaptiveRun
    from knowcomp.study.worker import ModelWorker

    spec_hash = spec.spec_hash()
    adaptive = None
    if spec.precision is not None:
        adaptive = AdaptiveRun(spec.precision, lambda key, probe: _stored(store, key, probe))
    for model, group in groupby(pending, key=lambda p: p.trial.model):
        worker = None
        for candidate in group:
            item = claim(candidate)
            if item is None:
                continue
            if worker is None:
                listener.model_loading(model)
                options = {"dtype": spec.dtype, "device": spec.device,
                           "device_map": spec.device_map, "data_dir": spec.data_dir,
                           "similarity": spec.similarity, "calibration": spec.calibration,
                           "adapters": spec.adapters_folder(),
                           "batch_tokens": spec.batch_tokens,
                           "ablation": spec.recovery.ablation}  # fmt: skip
                if reuse_budget_mb is not None:  # the prefix cache's budget (knowcomp.reuse)
                    options["reuse_budget_mb"] = reuse_budget_mb
                worker = ModelWorker(model, **options)
            listener.trial_started(item.trial)
            outcome = worker.run(item.trial, item.probes, study=spec.name, spec_hash=spec_hash,
                                 progress=listener.probe_started, adaptive=adaptive)  # fmt: skip
            if adaptive is not None:
                outcome.updates = adaptive.take_updates()  # baselines extended on the way
            yield item.trial, outcome
        del worker


def _stored(store: ResultsStore, trial_key: str, probe: str) -> dict | None:
    """The stored result of `probe` for a trial (under whatever LAMA protocol name)."""
    from knowcomp.probes.lama.protocols import probe_of

    name = next((n for n in store.done_probes(trial_key) if probe_of(n) == probe), None)
    return None if name is None else store.result(trial_key, name)
