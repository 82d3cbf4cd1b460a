"""Reuse of a baseline run's states by trials that change only what comes after them."""

from knowcomp.reuse.changes import ChangePoint, Reuse, change_point
from knowcomp.reuse.prefix_cache import DEFAULT_BUDGET_MB, PrefixCache
from knowcomp.reuse.trial import TrialReuse, for_trial

__all__ = [
    "DEFAULT_BUDGET_MB",
    "ChangePoint",
    "PrefixCache",
    "Reuse",
    "TrialReuse",
    "change_point",
    "for_trial",
]
