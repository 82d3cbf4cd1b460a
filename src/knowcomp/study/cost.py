"""What a study will cost, measured before it runs (`knowcomp run --dry-run`).

Per model: load it as the study would, and per probe setting, after one untimed warm-up run,
time two runs on the actual model and device, a tiny one (one item per relation or task) and a
sample, to split the probe's cost into a fixed part (reading data, building items) and a part
per item, with the tokens and the peak memory per item. Where the study's items are few enough,
the probe runs at the study's size instead: that is the study's baseline itself, stored in the
baseline cache (`knowcomp.cache`) so the study reuses it. Per sweep (a recipe at one level
stands for its others): apply the recipe once and time it, and time one forward batch
compressed against uncompressed where the recipe quantizes, which scales the per-item part
(dynamic int8 runs at another speed than float; pruning does not change dense kernels, so a
pruned model's factor is 1 and is not measured: on a busy machine the noise would exceed it).
Calibrated methods (GPTQ, SparseGPT, Wanda) take minutes, so they run up to the first layer of
their second block and the rest is scaled from it.

The estimate of a trial: its probes' counts (the runner counts items before each probe),
each probe's fixed part plus items x per-item time x the sweep's speed factor, its compression
when the trial before it left another one in place, and the training of its recover step
(`study.train_cost`: a few optimizer steps of the trial's method measured on the model, scaled
by the steps its token budget implies); a probe whose baseline is in the cache costs nothing,
and one a trial starts from the baseline's kept states (`study.reuse_cost`) pays the measured
share of its per-item time that a served run still computes, plus the served run's own
fixed part.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import torch

from knowcomp.probes.base import Probe, RunOptions
from knowcomp.reuse import DEFAULT_BUDGET_MB
from knowcomp.study.reuse_cost import ReusePlan, ServedRate, plan_reuse, trial_point
from knowcomp.study.spec import StudySpec
from knowcomp.study.train_cost import TrainingEstimate
from knowcomp.study.trials import Trial

SAMPLE_ITEMS = 16  # items of the larger measuring run of a probe (at least one limit step)
Report = Callable[[str], None]


@dataclass
class PeakMemory:
    """Peak memory inside a `with` block: the device's allocator peak on CUDA, the process's
    resident peak on Linux CPUs (`VmHWM`, reset through `/proc/self/clear_refs`), else None."""

    device: str = "cpu"
    peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            self.peak = int(torch.cuda.max_memory_allocated())
            return
        with contextlib.suppress(OSError, ValueError, StopIteration):
            status = Path("/proc/self/status").read_text().splitlines()
            line = next(x for x in status if x.startswith("VmHWM:"))
            self.peak = int(line.split()[1]) * 1024


@contextlib.contextmanager
def counting_tokens(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count the token positions every forward call of `model` reads (padding included)."""
    counted = [0]

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        for name in ("input_ids", "decoder_input_ids"):
            ids = kwargs.get(name)
            if ids is None and name == "input_ids" and args:
                ids = args[0]
            if isinstance(ids, torch.Tensor):
                counted[0] += ids.numel()

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counted
    finally:
        handle.remove()


@dataclass
class ProbeRate:
    """One probe setting's measured cost on the uncompressed model."""

    probe: str
    items: int  # items at the study's size
    count_seconds: float  # the runner's `count` before the probe runs
    overhead: float  # seconds a run costs whatever its size
    per_item: float  # seconds per item
    tokens_per_item: float
    peak: int | None
    exact: bool  # measured at the study's size (then `per_item` holds the whole time)

    def seconds(self, factor: float = 1.0) -> float:
        return self.count_seconds + self.overhead + factor * self.per_item * self.items


@dataclass
class SweepCost:
    compress_seconds: float
    speed_factor: float  # a forward batch's time compressed / uncompressed
    peak: int | None
    how: str  # "applied" or "from one block of N"


@dataclass
class TrialEstimate:
    trial: Trial
    items: int
    tokens: int
    seconds: float
    peak: int | None
    cached: list[str] = field(default_factory=list)  # probes read from the baseline cache
    reuse: str | None = None  # its prefix reuse per probe (`reuse_cost.ReusePlan.describe`)
    training: TrainingEstimate | None = None  # the recover step's training (`train_cost`)


@dataclass
class StudyEstimate:
    trials: list[TrialEstimate]
    load_seconds: dict[str, float]
    measure_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.trials) + sum(self.load_seconds.values())

    @property
    def peak(self) -> int | None:
        peaks = [t.peak for t in self.trials if t.peak is not None]
        return max(peaks) if peaks else None


def _options(trial: Trial, data_dir: Path | None, **extra: Any) -> RunOptions:
    values = {"limit": trial.limit, "seed": trial.seed, "data_dir": data_dir,
              "lama_mode": trial.lama_mode, "lama_protocol": trial.lama_protocol,
              "add_bos": trial.add_bos, **extra}  # fmt: skip
    return RunOptions(**values)


def _timed_run(loaded: Any, probe: Probe, options: RunOptions, device: str, *,
               cached: bool = False) -> tuple[float, int, int | None, int]:  # fmt: skip
    """(seconds, tokens, peak bytes, items) of one probe run; `cached`: through the baseline
    cache, so a run at the study's size is stored for the study to reuse."""
    from knowcomp.cache import cached_probe_run

    with PeakMemory(device) as memory, counting_tokens(loaded.model) as tokens:
        start = time.perf_counter()
        result = cached_probe_run(loaded, probe, options, baseline=cached)
        seconds = time.perf_counter() - start
    items = int(result.counts.get("facts", result.counts.get("items", 0)))
    return seconds, tokens[0], memory.peak, items


def measure_probe(loaded: Any, trial: Trial, probe_name: str, data_dir: Path | None,
                  device: str) -> ProbeRate:  # fmt: skip
    """Time `probe_name` on `loaded` (see the module doc): at the study's size when that is
    at most `SAMPLE_ITEMS` items (or a few relations), else a tiny run and a sample run."""
    from knowcomp.probes.registry import get_probe

    probe = get_probe(probe_name)
    target = _options(trial, data_dir)
    start = time.perf_counter()
    items = probe.count(target)
    count_seconds = time.perf_counter() - start
    cached = cached_baseline(loaded, trial, probe_name, data_dir)
    unit = max(probe.count(_options(trial, data_dir, limit=1)), 1)  # items per limit step
    # A first run pays once what a study pays once (reading and parsing the data, first
    # allocations); timed, it would count that in every trial.
    _timed_run(loaded, probe, _options(trial, data_dir, limit=1), device)
    sample_limit = max(2, math.ceil(SAMPLE_ITEMS / unit))
    if trial.limit is not None and trial.limit <= sample_limit and not cached:
        seconds, tokens, peak, scored = _timed_run(loaded, probe, target, device, cached=True)
        per_item = seconds / max(scored, 1)  # no split: the speed factor scales all of it
        return ProbeRate(probe_name, items, count_seconds, 0.0, per_item,
                         tokens / max(scored, 1), peak, True)  # fmt: skip
    small_limit = 1
    if trial.limit is not None:
        sample_limit = min(sample_limit, trial.limit)
        small_limit = min(small_limit, max(trial.limit - 1, 1))
    small = _options(trial, data_dir, limit=small_limit)
    s1, _, p1, n1 = _timed_run(loaded, probe, small, device)
    sample = _options(trial, data_dir, limit=sample_limit)
    s2, t2, p2, n2 = _timed_run(loaded, probe, sample, device)
    per_item = s2 / max(n2, 1)
    if n2 > n1:  # the slope, within what a fixed part of zero to 3/4 of s2 allows: noise on
        # a busy machine makes the difference of two timings swing far beyond either
        per_item = min(max((s2 - s1) / (n2 - n1), 0.25 * per_item), per_item)
    overhead = max(s2 - per_item * n2, 0.0)
    peaks = [p for p in (p1, p2) if p is not None]
    return ProbeRate(probe_name, items, count_seconds, overhead, per_item,
                     t2 / max(n2, 1), max(peaks) if peaks else None, False)  # fmt: skip


def cached_baseline(loaded: Any, trial: Trial, probe_name: str, data_dir: Path | None) -> bool:
    """Whether the baseline cache holds `probe_name` for `trial`'s options on `loaded` as it
    is now (uncompressed)."""
    from knowcomp.cache import default_cache
    from knowcomp.cache.keys import baseline_key
    from knowcomp.probes.registry import get_probe

    cache = default_cache()
    if cache is None:
        return False
    key = baseline_key(loaded, get_probe(probe_name), _options(trial, data_dir))
    return key is not None and cache.path_for(key).is_file()


def measure_sweep(worker: Any, trial: Trial, batch: torch.Tensor, base_forward: float,
                  device: str) -> SweepCost:  # fmt: skip
    """Apply `trial`'s recipe once on `worker` (a `pipeline.Pipeline`; calibrated steps up to
    their second block) and time it, and a forward batch on the result; then restore."""
    from knowcomp.compress import parse_recipe

    recipe = parse_recipe(trial.recipe or "")
    stopper = _FirstBlocks()
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        with contextlib.suppress(_Stop):
            worker.session.apply(recipe, seed=trial.seed, progress=stopper.factory)
        seconds = time.perf_counter() - start
    how = "applied"
    if stopper.stopped:
        seconds = stopper.scaled(seconds)
        how = f"scaled from {stopper.done} of {stopper.total} layers"
    factor = 1.0  # zeros do not speed up dense kernels: a pruned model runs as fast
    if recipe.has_quantization:
        factor = fastest_forward(worker.loaded.model, batch) / base_forward
    worker.restore()
    return SweepCost(seconds, factor, memory.peak, how)


def fastest_forward(model: torch.nn.Module, ids: torch.Tensor, repeats: int = 5) -> float:
    """The fastest of `repeats` forwards of `ids` after a warm-up: on a shared machine the
    minimum is the timing least disturbed by other processes, and only a ratio is needed."""
    from knowcomp.recovery.latency import forward_times

    return min(forward_times(model, ids, repeats))


class _Stop(Exception):
    """Raised from a calibrated step's progress to stop it once its cost can be scaled."""


class _FirstBlocks:
    """A progress factory for `CompressionSession.apply` that lets a calibrated step compress
    the first layer of its second block (so one whole block, with its calibration pass, has
    been timed), then stops it; `scaled` extends the time to all of its layers."""

    BLOCK_GUESS = 7  # linear layers per decoder block (q, k, v, o, gate, up, down)

    def __init__(self) -> None:
        self.times: list[float] = []
        self.total = 0
        self.stopped = False
        self.done = 0

    def factory(self, _description: str, layers: int) -> Callable[[int], None]:
        self.total, self.times, self.done = layers, [time.perf_counter()], 0
        limit = min(self.BLOCK_GUESS + 1, layers)

        def advance(n: int) -> None:
            self.done += n
            self.times.append(time.perf_counter())
            if self.done >= limit and layers > limit:
                self.stopped = True
                raise _Stop

        return advance

    def scaled(self, seconds: float) -> float:
        per_layer = (self.times[-1] - self.times[1]) / max(self.done - 1, 1)
        return seconds + per_layer * (self.total - self.done)


def _trial_estimate(trial: Trial, probes: list[str], rates: dict[tuple, ProbeRate],
                    sweep: SweepCost | None, compress: bool, cached: set[str],
                    training: TrainingEstimate | None = None, reuse: ReusePlan | None = None,
                    reused: dict[tuple, ServedRate] | None = None) -> TrialEstimate:  # fmt: skip
    """`reuse`: the trial's prefix reuse; `reused[(rate key, reuse)]`: a served run's share of
    a plain run's per-item time and its own fixed part (`reuse_cost.ServedRate`)."""
    factor = sweep.speed_factor if sweep is not None else 1.0
    estimate = TrialEstimate(trial, 0, 0, 0.0, sweep.peak if sweep else None,
                             reuse=reuse.describe() if reuse else None,
                             training=training)  # fmt: skip
    if training is not None:
        estimate.seconds += training.seconds
    for name in probes:
        rate = rates[_rate_key(trial, name)]
        estimate.items += rate.items
        estimate.tokens += round(rate.tokens_per_item * rate.items)
        if name in cached:
            estimate.cached.append(name)
            estimate.seconds += rate.count_seconds
        elif reuse is not None and name in reuse.served and reused is not None:
            served = reused[(_rate_key(trial, name), reuse.point.reuse)]
            estimate.seconds += (rate.count_seconds + served.outside
                                 + factor * served.share * rate.per_item * rate.items)  # fmt: skip
        else:
            estimate.seconds += rate.seconds(factor)
        if rate.peak is not None:
            estimate.peak = max(estimate.peak or 0, rate.peak)
    if compress and sweep is not None:
        estimate.seconds += sweep.compress_seconds
    return estimate


def _rate_key(trial: Trial, probe: str) -> tuple:
    return (probe, trial.limit, trial.lama_mode, trial.lama_protocol, trial.add_bos)


def estimate_study(spec: StudySpec, pending: list, report: Report | None = None,
                   reuse_budget_mb: float = DEFAULT_BUDGET_MB) -> StudyEstimate:  # fmt: skip
    """Measure and estimate every pending trial (`runner.PendingTrial`s) of `spec`, run with
    a prefix cache of `reuse_budget_mb` (`knowcomp run --reuse-memory`)."""
    from knowcomp.models.placement import ChosenPlacement, resolve_auto
    from knowcomp.pipeline import Pipeline
    from knowcomp.recovery.latency import latency_batch

    say = report or (lambda _text: None)
    started = time.perf_counter()
    estimates: list[TrialEstimate] = []
    loads: dict[str, float] = {}
    notes: list[str] = []
    device, dtype = resolve_auto(spec.device or "auto", spec.dtype)
    for model, group in groupby(pending, key=lambda p: p.trial.model):
        items = list(group)
        say(f"loading {model}")
        start = time.perf_counter()
        placement = ChosenPlacement(device, dtype, spec.device_map)
        worker = Pipeline(model, placement=placement, data_dir=spec.data_dir)
        loads[model] = time.perf_counter() - start
        rates: dict[tuple, ProbeRate] = {}
        for item in items:
            for name in item.probes:
                key = _rate_key(item.trial, name)
                if key not in rates:
                    say(f"measuring {name} on {model}")
                    rates[key] = measure_probe(worker.loaded, item.trial, name, spec.data_dir,
                                               device)  # fmt: skip
        cached = {
            item.trial.key: {p for p in item.probes
                             if cached_baseline(worker.loaded, item.trial, p, spec.data_dir)}
            for item in items if item.trial.recipe is None and item.trial.recover is None
        }  # fmt: skip
        vocab = worker.loaded.model.get_input_embeddings().num_embeddings
        batch = latency_batch(vocab, batch=2, tokens=32)  # small: it only sets a ratio
        quantized = any("quant:" in (i.trial.recipe or "") for i in items)
        base_forward = fastest_forward(worker.loaded.model, batch) if quantized else 1.0
        training = _training_rates(worker, items, spec, say)  # on the uncompressed model
        plans = plan_reuse(items, {i.trial.key: trial_point(worker, i.trial, reuse_budget_mb)
                                   for i in items}, cached, _reuse_key)  # fmt: skip
        reused = _reuse_shares(worker, items, plans, spec.data_dir, say)
        sweeps: dict[str, SweepCost] = {}
        previous: tuple | None = None
        for item in items:
            trial = item.trial
            sweep = None
            if trial.recipe is not None:
                if trial.sweep not in sweeps:
                    say(f"compressing once for {trial.sweep}")
                    sweeps[trial.sweep] = measure_sweep(worker, trial, batch, base_forward,
                                                        device)  # fmt: skip
                sweep = sweeps[trial.sweep]
            same = previous == (trial.recipe, trial.seed)  # the worker keeps it compressed
            trained = _trial_training(trial, training, sweep, spec)
            estimates.append(_trial_estimate(trial, item.probes, rates, sweep, not same,
                                             cached.get(trial.key, set()), trained,
                                             plans.get(trial.key), reused))  # fmt: skip
            previous = (trial.recipe, trial.seed) if trial.recipe else None
        if training:
            notes.append("training is timed on the uncompressed model over a few optimizer "
                         "steps and scaled by each trial's steps (a quantized sweep's speed "
                         "factor applied)")  # fmt: skip
        del worker
    return StudyEstimate(estimates, loads, time.perf_counter() - started, notes)


def _train_key(trial: Trial) -> tuple:
    """What sets a recover step's time per optimizer step: the method, sequence length and
    batch size (the token budget only sets how many steps)."""
    train = json.loads(trial.train or "{}")
    return (trial.recover, train.get("seqlen"), train.get("batch_size"))


def _training_rates(worker: Any, items: list, spec: StudySpec, say: Report) -> dict:
    """`train_cost.measure_training` once per recover setting the pending trials train
    (those whose adapter the study saved already train nothing)."""
    from knowcomp.study.train_cost import measure_training, saved_adapter
    from knowcomp.study.worker import trial_train_settings

    rates: dict[tuple, Any] = {}
    for item in items:
        trial = item.trial
        if trial.recover is None or saved_adapter(spec.adapters_folder(), trial.key):
            continue
        key = _train_key(trial)
        if key not in rates:
            say(f"timing {trial.recover} training steps")
            train = trial_train_settings(trial, spec.data_dir)
            rates[key] = measure_training(worker.loaded, trial.recover, train)
    return rates


def _trial_training(trial: Trial, rates: dict, sweep: SweepCost | None,
                    spec: StudySpec) -> TrainingEstimate | None:  # fmt: skip
    """A recovered trial's training estimate (None without a recover step)."""
    from knowcomp.recovery import parse_method
    from knowcomp.study.train_cost import estimate_training, saved_adapter
    from knowcomp.study.worker import trial_train_settings

    if trial.recover is None:
        return None
    if saved_adapter(spec.adapters_folder(), trial.key):
        return TrainingEstimate(0, 0.0, "saved adapter: loaded, not trained")
    factor = sweep.speed_factor if sweep is not None else 1.0
    train = trial_train_settings(trial, spec.data_dir)
    return estimate_training(rates[_train_key(trial)], parse_method(trial.recover), train, factor)


def _reuse_key(trial: Trial, probe: str) -> tuple:
    """What makes two runs of a probe the same forwards (the prefix cache's keys)."""
    return (*_rate_key(trial, probe), trial.seed)


def _reuse_shares(worker: Any, items: list, plans: dict[str, ReusePlan],
                  data_dir: Path | None, say: Report) -> dict[tuple, ServedRate]:  # fmt: skip
    """`reuse_cost.measure_reuse` once per probe setting and kind of reuse a trial is served,
    on a sample of `SAMPLE_ITEMS` items (or the study's size, when smaller)."""
    from knowcomp.probes.registry import get_probe
    from knowcomp.study.reuse_cost import measure_reuse, sample_options

    shares: dict[tuple, ServedRate] = {}
    for item in items:
        plan = plans.get(item.trial.key)
        for name in plan.served if plan else ():
            key = (_rate_key(item.trial, name), plan.point.reuse)
            if key in shares:
                continue
            say(f"timing {name} started from the baseline's states")
            unit = max(get_probe(name).count(sample_options(item.trial, data_dir, 1)), 1)
            limit = max(2, math.ceil(SAMPLE_ITEMS / unit))
            if item.trial.limit is not None:
                limit = min(limit, item.trial.limit)
            options = sample_options(item.trial, data_dir, limit)
            shares[key] = measure_reuse(worker.loaded, plan.point, name, options)
    return shares
