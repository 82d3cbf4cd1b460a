"""Adaptive evaluation: score a model's items chunk by chunk, stop when its drop is clear.

With a precision P (points), a compressed (or recovered) model scores each probe's items in a
seeded random order (`probes.sampling`: the parts (0, s1), (s1, s2), ... of the items' draws),
in chunks that grow 1.5x (`analysis.sequential.chunk_ends`). After each chunk it pairs every
item with the baseline's score of the same item and computes the betting confidence sequence of
the drop (`analysis.sequential`): anytime-valid, so stopping on it keeps its 95% coverage. It
stops when the sequence's half-width is at most P points, or when the items run out (then the
result is the exhaustive one). The baseline (the uncompressed model, no adapter) is scored
lazily: as far as the compared model has got, and ahead of it (twice the share it has reached:
each extension restores the model and compresses it again, so they are kept few), so it covers
every item the compared model used.

Two callers share this: a study (`study.adaptive`: results stored, resumed, extended by a
tighter precision) and `knowcomp eval --precision` (`against_baseline`: one comparison, the
baseline's parts read from the baseline cache where they are). What a result carries
(`Sequential`, the store's `results.sequential` column, JSON): the precision, the share of the
draws scored, the pool (items the exhaustive run scores), the paired items at each check (so the
sequence is recomputed the same way), why it stopped, and the final interval. A resumed study
continues from the stored share; a run with a tighter precision extends the stored result; a
run without a precision completes it to the exhaustive result.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from knowcomp.analysis.items import aligned, item_values
from knowcomp.analysis.sequential import chunk_ends, half_width, interval_path
from knowcomp.errors import KnowcompError
from knowcomp.probes.base import Probe, ProbeResult, RunOptions
from knowcomp.probes.merge import merge, metrics_function

STOP_PRECISION = "precision reached"
STOP_EXHAUSTED = "items ran out"
STOP_BASELINE = "baseline: scored as far as its trials needed"
Scorer = Callable[[RunOptions], ProbeResult]  # runs the probe on the model as it is now


def check_precision(value: Any) -> float:
    """A precision in points: a positive, finite number; else a one-line error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise KnowcompError(
            f"precision must be a positive number of points (the half-width of the drop's "
            f"95% confidence sequence), got {value!r}; e.g. --precision 2"
        )
    return number


@dataclass
class Sequential:
    """How far an adaptive result got, stored with it."""

    precision: float | None  # points; None for a baseline (it has no drop of its own)
    share: float  # the items whose draw is below this share were scored
    pool: int  # items the exhaustive run scores
    checks: list[int] = field(default_factory=list)  # paired items at each check
    stop: str = ""
    drop: dict[str, Any] | None = None  # value, low, high (points), items, method

    @classmethod
    def of(cls, data: dict[str, Any] | str | None) -> Sequential | None:
        if data is None:
            return None
        return cls(**(json.loads(data) if isinstance(data, str) else data))

    @property
    def half_width(self) -> float | None:
        if self.drop is None:
            return None
        return (self.drop["high"] - self.drop["low"]) / 2


def settled(sequential: Sequential | None, precision: float | None, baseline: bool) -> bool:
    """Whether a stored result needs no more items for a run at `precision` (None: a run that
    scores every item)."""
    if sequential is None or sequential.stop == STOP_EXHAUSTED:
        return True  # scored every item
    if precision is None:
        return False  # an exhaustive run completes it
    if baseline:
        return True  # extended when a trial needs it
    width = sequential.half_width
    return width is not None and width <= precision


def _order(seed: int, record_key: Any) -> str:
    """Within a chunk, a seeded random order (independent of the chunk's draws)."""
    text = f"{seed}\x1fwithin\x1f{json.dumps(record_key, default=str)}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _key(record: dict[str, Any]) -> Any:
    return [record.get("relation"), record["uuid"]] if "uuid" in record else record.get("index")


@dataclass
class Progress:
    """A probe's items so far: the merged parts, in the order scored, and their share."""

    probe: Probe
    options: RunOptions
    share: float = 0.0
    parts: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def resume(cls, probe: Probe, options: RunOptions, stored: dict[str, Any] | None) -> Progress:
        """From a stored result (adaptive, or exhaustive); its merged result stands as one part."""
        progress = cls(probe, options)
        if stored is not None:
            sequential = Sequential.of(stored.get("sequential"))
            part = {k: v for k, v in stored.items() if k != "sequential"}
            progress.share = 1.0 if sequential is None else sequential.share  # None: every item
            progress.parts, progress.records = [part], list(stored.get("records") or [])
        return progress

    def extend(self, share: float, scorer: Scorer) -> None:
        """Score the items with draws in [self.share, share) and add them."""
        if share <= self.share:
            return
        options = replace(self.options, part=(self.share, 1.0 + 1e-9 if share >= 1 else share))
        if self.probe.count(options):  # an empty part scores nothing (some probes divide by n)
            result = scorer(options).to_dict()
            chunk = sorted(result["records"], key=lambda r: _order(self.options.seed, _key(r)))
            self.parts.append({**result, "records": chunk})
            self.records += chunk
        self.share = share

    def result(self, sequential: Sequential) -> dict[str, Any]:
        merged = merge(self.parts, self.records, metrics_function(self.probe, self.options))
        return {**merged, "sequential": asdict(sequential)}


def shares(pool: int) -> list[float]:
    """The draw shares at which adaptive evaluation checks (the last is 1: every item)."""
    ends = chunk_ends(pool) if pool else [0]
    return [end / pool for end in ends[:-1]] + [1.0]


def check_parts(probe: Probe, options: RunOptions) -> int:
    """The probe's pool (items the exhaustive run scores); an error for a probe that does
    not score parts of its items."""
    metrics_function(probe, options)  # a probe whose parts cannot be merged is named first
    if probe.count(replace(options, part=(0.0, 0.0))) != 0:
        raise KnowcompError(f"probe '{probe.name}' cannot score a part of its items, so not with "
                            "--precision; run it without --precision")  # fmt: skip
    return probe.count(options)


def _differences(trial: list[dict], base: list[dict], metric: str) -> np.ndarray:
    """Baseline minus trial per item both scored, in the trial's order."""
    ours, theirs = item_values(trial, metric), item_values(base, metric)
    if ours is None or theirs is None:
        return np.zeros(0)
    pair = aligned([ours, theirs])
    if pair is None:
        return np.zeros(0)
    return pair.rows[1] - pair.rows[0]


def paired_scores(result: dict[str, Any], baseline: dict[str, Any]) -> tuple[float, float] | None:
    """The baseline's and `result`'s headline scores (shares) on the items both scored: the two
    scores whose difference is the adaptive drop; None where they share no item."""
    metric = _metric(result)
    ours, theirs = item_values(result["records"], metric), item_values(baseline["records"], metric)
    pair = None if ours is None or theirs is None else aligned([ours, theirs])
    if pair is None:
        return None
    return float(pair.rows[1].mean()), float(pair.rows[0].mean())


def _metric(result: dict[str, Any]) -> str:
    from knowcomp.analysis.items import BINARY
    from knowcomp.probes.categories import headline_name

    name = headline_name(result["metrics"])
    if name is None or name not in BINARY:
        raise KnowcompError(f"probe '{result['probe']}' has no 0/1 headline score to stop on; "
                            "run it without --precision")  # fmt: skip
    return name


def measure_baseline(
    probe: Probe, options: RunOptions, stored: dict[str, Any] | None, scorer: Scorer
) -> dict[str, Any]:
    """A baseline's first chunk (or its stored result, unchanged)."""
    pool = check_parts(probe, options)
    progress = Progress.resume(probe, options, stored)
    progress.extend(shares(pool)[0], scorer)
    stop = STOP_EXHAUSTED if progress.share >= 1 else STOP_BASELINE
    return progress.result(Sequential(None, progress.share, pool, stop=stop))


def measure(
    probe: Probe,
    options: RunOptions,
    precision: float,
    stored: dict[str, Any] | None,
    scorer: Scorer,
    baseline: Progress,
    baseline_scorer: Scorer,
) -> dict[str, Any]:
    """A compressed trial's result at `precision`: extended chunk by chunk from `stored` (its
    earlier adaptive result, or None) until the drop's confidence sequence against `baseline`
    (extended with `baseline_scorer` as needed) is narrow enough, or the items run out."""
    pool = check_parts(probe, options)
    progress = Progress.resume(probe, options, stored)
    sequential = Sequential.of(stored.get("sequential")) if stored else None
    checks = list(sequential.checks) if sequential is not None else []
    points = [s for s in shares(pool) if s > progress.share]
    estimate = None
    while True:
        if progress.records:
            metric = _metric(progress.parts[-1])
            if baseline.share < progress.share:  # ahead, to re-compress the model less often
                ahead = min(1.0, 2 * progress.share)
                baseline.extend(next(s for s in shares(pool) if s >= ahead), baseline_scorer)
            d = _differences(progress.records, baseline.records, metric)
            checks = [c for c in checks if c <= len(d)]  # a baseline re-scored since: fewer pairs
            if len(d) and (not checks or checks[-1] < len(d)):
                checks.append(len(d))
            if checks:
                estimate = interval_path(d, checks)[-1].scaled(100)
        if progress.share >= 1 or (estimate is not None and half_width(estimate) <= precision):
            break
        progress.extend(points.pop(0), scorer)
    stop = STOP_EXHAUSTED if progress.share >= 1 else STOP_PRECISION
    drop = None
    if estimate is not None:
        drop = {"value": estimate.value, "low": estimate.low, "high": estimate.high,
                "items": estimate.n, "method": estimate.method}  # fmt: skip
    return progress.result(Sequential(precision, progress.share, pool, checks, stop, drop))


def baseline_result(baseline: Progress, pool: int) -> dict[str, Any]:
    """The baseline's result as far as it has been extended, to store over the old one."""
    stop = STOP_EXHAUSTED if baseline.share >= 1 else STOP_BASELINE
    return baseline.result(Sequential(None, baseline.share, pool, stop=stop))


@dataclass
class AgainstBaseline:
    """`Pipeline.evaluate`'s `score` for one comparison with the baseline (`knowcomp eval
    --precision`): each probe measured at `precision` from nothing, against a baseline scored
    with `uncompressed(probe, options)` as far as it needs. Each result is the stored form (a
    dict, with its `sequential`); `baselines[probe name]` holds the baseline's."""

    precision: float
    uncompressed: Callable[[Probe, RunOptions], ProbeResult]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __call__(self, probe: Probe, options: RunOptions, run: Scorer) -> dict[str, Any]:
        baseline = Progress(probe, options)
        result = measure(probe, options, self.precision, None, run, baseline,
                         lambda chosen: self.uncompressed(probe, chosen))  # fmt: skip
        self.baselines[probe.name] = baseline_result(baseline, result["sequential"]["pool"])
        return result
