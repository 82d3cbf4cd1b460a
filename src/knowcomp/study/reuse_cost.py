"""The dry run's view of prefix reuse (`knowcomp.reuse`): which pending trials will start from
the baseline's states, and how much of a probe's time they still pay.

Which: a trial reuses what its recipe's change point allows (`reuse.change_point`: only the
head changes, or an encoder-decoder's encoder is untouched), without a recover step, on a model
that may pack requests, with a budget above 0. The study worker runs a model's trials in order
and keeps, per probe setting, what the baseline recorded or what the first reuse-able trial
computed before its change (`reuse.prefix_cache`); `plan_reuse` replays that order: the first
such trial of a setting (when the baseline did not run here: it was stored already, or read
from the baseline cache) runs in full and keeps the states, the later ones are served.

How much: `measure_reuse` runs a probe's sample on the uncompressed model once recording and
once served from what it recorded, both timed inside their scoring batches; the ratio
(`served_share`) scales the probe's per-item time for a served trial, and the served run's
seconds outside its batches are the trial's fixed part for that probe (`ServedRate`). The
head on the uncompressed weights costs what an unstructured pruned head costs (dense
kernels), so the ratio holds for those; a head pruned by whole rows is served from its other
rows (`reuse.PrefixCache`) and costs less, which the estimate does not count; a quantized
head's speed factor still applies.
The estimate assumes the budget holds the states (`--reuse-memory`; a baseline that passes it
drops them, and its trials then run in full).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowcomp.reuse.changes import ChangePoint, Reuse


@dataclass(frozen=True)
class ReusePlan:
    """What one pending trial does with the prefix cache, per probe."""

    point: ChangePoint
    served: tuple[str, ...]  # probes that start from kept states
    keeps: tuple[str, ...]  # probes it runs in full, keeping the states for later trials

    def describe(self) -> str:
        what = "head inputs" if self.point.reuse is Reuse.HEAD else "encoder outputs"
        parts = []
        if self.served:
            parts.append(f"{what}: {', '.join(self.served)}")
        if self.keeps:
            parts.append(f"keeps {what} for later trials: {', '.join(self.keeps)}")
        return "; ".join(parts)


def trial_point(pipeline: Any, trial: Any, budget_mb: float) -> ChangePoint | None:
    """The change point of a trial that may reuse (None: it runs in full whatever is kept)."""
    from knowcomp.probes import engine
    from knowcomp.reuse.trial import recipe_change_point

    if budget_mb <= 0 or trial.recipe is None or trial.recover is not None:
        return None
    if engine.per_sequence(pipeline.loaded.model):
        return None
    point = recipe_change_point(pipeline.loaded, pipeline.session, trial.recipe, trial.seed)
    return None if point.reuse is Reuse.NONE else point


def plan_reuse(items: Iterable[Any], points: dict[str, ChangePoint | None],
               cached: dict[str, set[str]], key: Any) -> dict[str, ReusePlan]:  # fmt: skip
    """Replay the worker's order over `items` (`runner.PendingTrial`s of one model): per trial
    key with a change point, the probes it is served and those it keeps. `cached[trial key]`:
    the baseline's probes read from the baseline cache (they record nothing); `key(trial,
    probe)`: what makes two runs of a probe the same forwards."""
    heads: set[Any] = set()  # probe settings whose head inputs (and encoder outputs) are kept
    encoders: set[Any] = set()  # probe settings whose encoder outputs are kept
    plans: dict[str, ReusePlan] = {}
    for item in items:
        trial = item.trial
        if trial.recipe is None and trial.recover is None:  # the baseline records
            for probe in item.probes:
                if probe not in cached.get(trial.key, set()):
                    heads.add(key(trial, probe))
                    encoders.add(key(trial, probe))
            continue
        point = points.get(trial.key)
        if point is None:
            continue
        kept = heads if point.reuse is Reuse.HEAD else encoders
        served = tuple(p for p in item.probes if key(trial, p) in kept)
        keeps = tuple(p for p in item.probes if key(trial, p) not in kept)
        for probe in keeps:
            encoders.add(key(trial, probe))
            if point.reuse is Reuse.HEAD:
                heads.add(key(trial, probe))
        plans[trial.key] = ReusePlan(point, served, keeps)
    return plans


@dataclass(frozen=True)
class ServedRate:
    """What a run served from kept states costs, measured on a probe's sample."""

    share: float  # of a plain run's per-item time (`served_share`)
    outside: float  # seconds outside its scoring batches: reading the data, building items


def measure_reuse(loaded: Any, point: ChangePoint, probe: Any, options: Any) -> ServedRate:
    """A served run's cost next to a plain one's, of `probe` (a name or a `Probe`) at
    `options` on `loaded` (uncompressed): one run recording, one run served from it as
    `point`, each timed as a whole and inside its scoring loops' batches. The share is the
    batches' ratio (`served_share`); the served run's seconds outside them stand for a
    served trial's fixed part, measured directly rather than taken from the plain runs'
    fit (`cost.ProbeRate.overhead`), which noise on a busy machine sets anywhere from 0 to
    seconds."""
    from knowcomp.probes.batching import take_record
    from knowcomp.probes.registry import get_probe
    from knowcomp.reuse import PrefixCache

    probe = get_probe(probe) if isinstance(probe, str) else probe
    cache = PrefixCache()
    seconds = []
    for context in (cache.recording(loaded.model), cache.serving(loaded.model, point)):
        take_record(loaded.model)  # from here on
        start = time.perf_counter()
        with context:
            probe.run(loaded, options)
        total = time.perf_counter() - start
        seconds.append((total, take_record(loaded.model).scoring))
    (plain, plain_batches), (served, served_batches) = seconds
    share = served_share(plain_batches, served_batches, plain, served)
    return ServedRate(share, max(served - served_batches, 0.0) if served_batches > 0 else 0.0)


def served_share(plain_batches: float, served_batches: float, plain: float = 0.0,
                 served: float = 0.0) -> float:  # fmt: skip
    """The share of a plain run's per-item time that a served run still pays: the ratio of
    the seconds the two runs spent inside their scoring batches (forwards, or the head on
    kept states, and the scores from the logits). What a run spends outside them (reading
    the data, building and tokenizing the items) is the same either way and counted once
    per run by the estimate (`ServedRate.outside`); the ratio of the whole times
    counted it in the share, and so once per item: on a sample of about 16 items, where it
    weighs most, that put final-layer trials at 2.7-3x their time at `--limit 50`
    (BENCHMARKS.md). Falls back to the whole times (`plain`, `served`) when no batch ran."""
    if plain_batches > 0:
        return min(served_batches / plain_batches, 1.0)
    return min(served / plain, 1.0) if plain > 0 else 1.0


def sample_options(trial: Any, data_dir: Path | None, limit: int | None) -> Any:
    from knowcomp.probes.base import RunOptions

    return RunOptions(limit=limit, seed=trial.seed, data_dir=data_dir, lama_mode=trial.lama_mode,
                      lama_protocol=trial.lama_protocol, add_bos=trial.add_bos)  # fmt: skip
