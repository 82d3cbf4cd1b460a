"""A study's progress and ETA (`study.eta`), on a fake clock: no wall-clock time is asserted."""

from __future__ import annotations

from knowcomp.study.eta import StudyClock, format_seconds


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_eta_counts_items_of_the_whole_study_and_drops_work_not_needed():
    now = FakeTime()
    clock = StudyClock({"base": 100, "a": 100, "b": 100, "c": 100}, now=now)
    assert clock.eta() is None and clock.describe().endswith("eta -")
    clock.start_trial("base")
    now.t += 1  # a cached baseline: no items scored, nothing counted as done
    clock.finish_trial("base")
    assert (clock.total, clock.done, clock.trials_done) == (300, 0, 1)
    clock.start_trial("a")
    now.t += 49
    clock.advance(100)
    clock.finish_trial("a")
    # 100 items in 50 s (the cached trial's second included): 200 items left, 100 s
    assert clock.eta() == 100
    clock.start_trial("b")
    now.t += 25
    clock.advance(50)  # mid-trial: the ETA covers the rest of this trial and of the study
    assert clock.eta() == 75 * 150 / 150
    assert clock.describe() == "trials 2/4 done, items 150/300, eta 1 min"
    clock.advance(50)
    clock.finish_trial("b")
    clock.leave_trial("c")  # another run computes it
    assert (clock.total, clock.done, clock.trials_done, clock.eta()) == (200, 200, 4, 0)


def test_trials_that_ran_elsewhere_count_as_done():
    now = FakeTime()
    clock = StudyClock({"a": 10, "b": 30}, now=now)
    now.t += 20
    clock.finish_trial("a")  # on Ray: no start, no item progress here
    now.t += 20
    assert (clock.done, clock.total) == (10, 40)
    assert clock.eta() == 30 * 20 / 10


def test_format_seconds():
    assert [format_seconds(s) for s in (4, 59.4, 61, 3599, 3600, 7500)] == [
        "4 s", "59 s", "1 min", "1 h 00 min", "1 h 00 min", "2 h 05 min",
    ]  # fmt: skip
