"""Trials as Ray tasks: one actor per model (or several), each loading its model once.

Trials of a model go round-robin to that model's actors (all trials of one recipe and seed, its
recovered trials included, to the same actor); results come back to the driver as
each finishes, and the driver alone writes the store. An actor is released as soon as its last
trial is done, so models that do not fit at the same time take turns. Each actor asks for one
GPU when the cluster has GPUs, and runs the model there (`actor_placement`); Ray gives each
actor its own GPU and shows it that GPU only, as `cuda:0`. An actor loads its model on its first
trial, in its own process.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from knowcomp.errors import KnowcompError

if TYPE_CHECKING:
    from knowcomp.store import TrialOutcome
    from knowcomp.study.runner import PendingTrial
    from knowcomp.study.spec import StudySpec
    from knowcomp.study.trials import Trial


@dataclass(frozen=True)
class ActorPlacement:
    """What one actor asks Ray for, and the device its model runs on inside the actor."""

    num_gpus: int
    device: str


def actor_placement(device: str, device_map: str | None, cluster_gpus: float) -> ActorPlacement:
    """One GPU per actor when the cluster has GPUs (the model runs on it: Ray shows each actor
    only its own GPU, so a spec's `cuda:N` becomes `cuda` there), with `device_map` too (its
    layers spread over that GPU and the CPU); none otherwise, on the spec's device. An Apple
    GPU (`mps`) is no Ray resource: such actors ask for none."""
    if cluster_gpus < 1 or device.startswith("mps"):
        return ActorPlacement(0, device)
    return ActorPlacement(1, device if device_map else "cuda")


class _TrialActor:
    """Lives in a Ray worker process: holds one model, loaded on its first trial."""

    def __init__(self, model: str, options: dict[str, Any]) -> None:
        self.model, self.options = model, options
        self.worker: Any = None
        self.adaptive: Any = None  # `study.adaptive.AdaptiveRun`, kept across the trials

    def placement(self) -> dict[str, Any]:
        """The GPUs Ray gave this actor, what it shows the process, and the model's device."""
        import ray

        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "device": self.options["device"],
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}  # fmt: skip

    def run(
        self, trial: Trial, probes: list[str], study: str, spec_hash: str,
        adaptive: tuple[float, dict[tuple[str, str], dict[str, Any]]] | None = None,
    ) -> TrialOutcome:  # fmt: skip
        """Run `trial`; `adaptive`: (precision, the stored results of the trial and its
        baseline by (trial key, probe), read by the driver when it sent the trial)."""
        if self.worker is None:
            from knowcomp.study.worker import ModelWorker

            self.worker = ModelWorker(self.model, **self.options)
        if adaptive is not None:
            from knowcomp.study.adaptive import AdaptiveRun, stored_reader

            precision, stored = adaptive
            if self.adaptive is None:
                self.adaptive = AdaptiveRun(precision, stored_reader(stored))
            self.adaptive.read = stored_reader(stored)
        chosen = self.adaptive if adaptive is not None else None
        outcome = self.worker.run(trial, probes, study=study, spec_hash=spec_hash,
                                  adaptive=chosen)  # fmt: skip
        if adaptive is not None:
            outcome.updates = self.adaptive.take_updates()  # baselines extended on the way
        return outcome


def actor_class(ray: Any, placement: ActorPlacement, cpus_per_worker: float) -> Any:
    """The Ray actor class of `run_on_ray`, asking for `placement`'s GPUs."""
    return ray.remote(num_cpus=cpus_per_worker, num_gpus=placement.num_gpus)(_TrialActor)


def _auth_hint() -> str:
    """Why a running cluster may refuse this client: Ray turns token authentication on for
    `ray start` when a token is saved in ~/.ray, but a client that names an address sends its
    token only with RAY_AUTH_MODE=token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    return ("; if the cluster uses token authentication (Ray turns it on when ~/.ray/auth_token "
            "exists), set RAY_AUTH_MODE=token here too")  # fmt: skip


def run_on_ray(
    spec: StudySpec,
    pending: list[PendingTrial],
    *,
    address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    reuse_budget_mb: float | None = None,
    read: Callable[[str, str], dict[str, Any] | None] | None = None,
) -> Iterator[tuple[Trial, TrialOutcome]]:
    """Yield (trial, outcome) as Ray finishes them; starts a local Ray if none is running.
    `reuse_budget_mb` is each actor's prefix cache budget (`knowcomp.reuse`; None: its
    default, 0: off): an actor's first reuse-able trial keeps the baseline's states it
    computes, its later ones reuse them, whichever actor ran the baseline.
    With `spec.precision`, `read(trial key, probe)` gives the stored results each trial is
    sent with (its own and its baseline's), so an actor never opens the store; an actor keeps
    the baselines it extended for its next trials, and the driver keeps the furthest one."""
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
            raise KnowcompError(f"cannot reach the Ray cluster at {address!r}: {err}"
                                + _auth_hint()) from None  # fmt: skip
    placement = actor_placement(spec.device, spec.device_map,
                                ray.cluster_resources().get("GPU", 0))  # fmt: skip
    actors_of = actor_class(ray, placement, cpus_per_worker)
    options = {"dtype": spec.dtype, "device": placement.device,
               "device_map": spec.device_map, "data_dir": spec.data_dir,
               "similarity": spec.similarity, "adapters": spec.adapters_folder(),
               "calibration": spec.calibration, "batch_tokens": spec.batch_tokens,
               "ablation": spec.recovery.ablation}  # fmt: skip
    if reuse_budget_mb is not None:  # the prefix cache's budget, as the local runner passes it
        options["reuse_budget_mb"] = reuse_budget_mb
    spec_hash = spec.spec_hash()
    by_model: dict[str, list[PendingTrial]] = defaultdict(list)
    for item in pending:
        by_model[item.trial.model].append(item)
    refs: dict[Any, tuple[Trial, Any]] = {}
    remaining: dict[Any, int] = {}
    try:
        for model, items in by_model.items():
            actors = [actors_of.remote(model, options) for _ in range(min(workers, len(items)))]
            groups: dict[tuple[str | None, int], int] = {}  # one recipe and seed: one actor,
            for item in items:  # so a recipe's recovered trials reuse its compression
                group = groups.setdefault((item.trial.recipe, item.trial.seed), len(groups))
                actor = actors[group % len(actors)]
                adaptive = None
                if spec.precision is not None and read is not None:
                    adaptive = (spec.precision, _snapshot(item, read))
                ref = actor.run.remote(item.trial, item.probes, spec.name, spec_hash, adaptive)
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


def _snapshot(
    item: PendingTrial, read: Callable[[str, str], dict[str, Any] | None]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The stored results an adaptive trial starts from: its own and its baseline's."""
    from knowcomp.study.adaptive import baseline_key

    keys = {item.trial.key, baseline_key(item.trial)}
    found = {(key, probe): read(key, probe) for key in keys for probe in item.probes}
    return {where: result for where, result in found.items() if result is not None}


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
