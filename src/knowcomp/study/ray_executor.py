"""Trials as Ray tasks: one actor per model (or several), each loading its model once.

Trials of a model go round-robin to that model's actors (all trials of one recipe and seed, its
recovered trials included, to the same actor); results come back to the driver as
each finishes, and the driver alone writes the store. An actor is released as soon as its last
trial is done, so models that do not fit at the same time take turns. Each actor asks for one
GPU when the cluster has GPUs, and runs the model there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from knowcomp.errors import KnowcompError

if TYPE_CHECKING:
    from knowcomp.store import TrialOutcome
    from knowcomp.study.runner import PendingTrial
    from knowcomp.study.spec import StudySpec
    from knowcomp.study.trials import Trial


class _TrialActor:
    """Lives in a Ray worker process: holds one loaded model."""

    def __init__(self, model: str, options: dict[str, Any]) -> None:
        from knowcomp.study.worker import ModelWorker

        self.worker = ModelWorker(model, **options)

    def run(self, trial: Trial, probes: list[str], study: str, spec_hash: str) -> TrialOutcome:
        return self.worker.run(trial, probes, study=study, spec_hash=spec_hash)


def run_on_ray(
    spec: StudySpec,
    pending: list[PendingTrial],
    *,
    address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
) -> Iterator[tuple[Trial, TrialOutcome]]:
    """Yield (trial, outcome) as Ray finishes them; starts a local Ray if none is running."""
    try:
        import ray
    except ImportError:
        raise KnowcompError(
            "--executor ray needs Ray; install it with: pip install 'knowcomp[ray]'"
        ) from None
    if not pending:
        return
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
        except ConnectionError as err:
            raise KnowcompError(f"cannot reach the Ray cluster at {address!r}: {err}") from None
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus)(_TrialActor)
    options = {"dtype": spec.dtype, "device": "cuda" if gpus else spec.device,
               "device_map": spec.device_map, "data_dir": spec.data_dir,
               "similarity": spec.similarity, "adapters": spec.adapters_folder(),
               "batch_tokens": spec.batch_tokens}  # fmt: skip
    spec_hash = spec.spec_hash()
    by_model: dict[str, list[PendingTrial]] = defaultdict(list)
    for item in pending:
        by_model[item.trial.model].append(item)
    refs: dict[Any, tuple[Trial, Any]] = {}
    remaining: dict[Any, int] = {}
    try:
        for model, items in by_model.items():
            actors = [actor_class.remote(model, options) for _ in range(min(workers, len(items)))]
            groups: dict[tuple[str | None, int], int] = {}  # one recipe and seed: one actor,
            for item in items:  # so a recipe's recovered trials reuse its compression
                group = groups.setdefault((item.trial.recipe, item.trial.seed), len(groups))
                actor = actors[group % len(actors)]
                ref = actor.run.remote(item.trial, item.probes, spec.name, spec_hash)
                refs[ref] = (item.trial, actor)
                remaining[actor] = remaining.get(actor, 0) + 1
        while refs:
            [done], _ = ray.wait(list(refs), num_returns=1)
            trial, actor = refs.pop(done)
            outcome = _get(ray, done)
            remaining[actor] -= 1
            if remaining[actor] == 0:
                ray.kill(actor)  # frees its CPU/GPU for the next model's actors
            yield trial, outcome
    finally:
        for actor, count in remaining.items():
            if count:
                ray.kill(actor)
        if started_here:
            ray.shutdown()


def _get(ray: Any, ref: Any) -> TrialOutcome:
    """ray.get, with a worker's knowcomp error surfaced as the same one-line error."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, KnowcompError):
            raise KnowcompError(str(cause)) from None
        raise
    except ray.exceptions.RayActorError as err:
        raise KnowcompError(
            f"a Ray worker died while loading or running its model: {err}"
        ) from None
