"""Uncertainty of scores and drops: intervals, paired tests, the recovered share, power.

Filled in below; this module is the one place that defines the recovered share.
"""

from __future__ import annotations


def recovered_share(
    base: float | None, compressed: float | None, recovered: float | None
) -> float | None:
    """(recovered - compressed) / (base - compressed): the share of what compression lost that
    recovery won back (1 = all of it, 0 = nothing, negative = recovery made it worse). None
    where a score is missing or compression lost nothing (the ratio is not defined)."""
    if base is None or compressed is None or recovered is None or base <= compressed:
        return None
    return (recovered - compressed) / (base - compressed)
