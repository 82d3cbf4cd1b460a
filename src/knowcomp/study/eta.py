"""A whole study's progress and time left, counted in items scored rather than in trials.

Trials differ a lot in cost: a baseline read from the cache costs nothing, a GPTQ trial
minutes of calibration before its first item. Counting items scored, and letting the time
spent between them (loading, compression, training) fall into the rate, gives an ETA for the
study that moves smoothly and is right on average; counting trials jumps with every cheap or
dear one. Work that was planned but not needed (a cached baseline, a probe that scored
fewer items than counted) leaves the plan when its trial ends, so it never counts as done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StudyClock:
    """Items planned per trial key; `advance` as they are scored; `eta()` in seconds."""

    planned: dict[str, int]
    now: Callable[[], float] = time.perf_counter
    done: int = 0
    trials_done: int = 0
    started_at: float | None = None
    _current: str | None = None
    _in_trial: int = 0
    _dropped: int = field(default=0)

    @property
    def trials(self) -> int:
        return len(self.planned)

    @property
    def total(self) -> int:
        """Items the study still means to score, plus those scored."""
        return sum(self.planned.values()) - self._dropped

    def start_trial(self, key: str) -> None:
        if self.started_at is None:
            self.started_at = self.now()
        self._current, self._in_trial = key, 0

    def advance(self, items: int) -> None:
        self.done += items
        self._in_trial += items

    def finish_trial(self, key: str) -> None:
        """A trial ended here; one that never started here (it ran on Ray, or another run
        stored it) counts as all done, one that scored fewer items than planned drops the
        rest from the plan."""
        planned = self.planned.get(key, 0)
        if self._current != key:
            if self.started_at is None:
                self.started_at = self.now()
            self.done += planned
        else:
            self._dropped += max(planned - self._in_trial, 0)
        self._current, self._in_trial = None, 0
        self.trials_done += 1

    def leave_trial(self, key: str) -> None:
        """A trial another run computes: out of this run's plan."""
        self._dropped += self.planned.get(key, 0)
        self.trials_done += 1

    def eta(self) -> float | None:
        """Seconds left at the rate since the first trial started; None before any item."""
        if self.started_at is None or self.done <= 0:
            return None
        elapsed = self.now() - self.started_at
        return max(self.total - self.done, 0) * elapsed / self.done

    def describe(self) -> str:
        """`trials 3/64 done, items 1,240/9,800, eta 1 h 12 min`."""
        eta = self.eta()
        left = "eta -" if eta is None else f"eta {format_seconds(eta)}"
        return (f"trials {self.trials_done}/{self.trials} done, items "
                f"{self.done:,}/{self.total:,}, {left}")  # fmt: skip


def format_seconds(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 05 min`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def planned_items(pending: list, data_dir: object = None) -> dict[str, int]:
    """Items each pending trial will score (`PendingTrial`s: its probes' counts at its limit,
    seed and LAMA settings), each distinct count read once."""
    from knowcomp.probes.base import RunOptions
    from knowcomp.probes.registry import get_probe

    counts: dict[tuple, int] = {}
    planned: dict[str, int] = {}
    for item in pending:
        t = item.trial
        total = 0
        for name in item.probes:
            key = (name, t.limit, t.seed, t.lama_mode, t.lama_protocol)
            if key not in counts:
                options = RunOptions(
                    limit=t.limit,
                    seed=t.seed,
                    data_dir=data_dir,  # type: ignore[arg-type]
                    lama_mode=t.lama_mode,
                    lama_protocol=t.lama_protocol,
                )
                counts[key] = get_probe(name).count(options)
            total += counts[key]
        planned[t.key] = total
    return planned
