"""`--limit N` with a seed: the same subset every time, in the data's own order; and a share
of that subset (`RunOptions.part`) for evaluation that scores items chunk by chunk.

Each item gets a seeded pseudo-random draw in [0, 1) from its position in its relation (LAMA)
or task; a part (low, high) keeps the items whose draw falls in [low, high). Ordering items by
their draw is a seeded random order of the whole probe, across relations, and the parts
(0, s1), (s1, s2), ... are its consecutive chunks, so a probe scores a chunk without knowing the
others: `knowcomp.pipeline.adaptive` grows s until the drop's interval is narrow enough.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")
Part = tuple[float, float]  # draws in [low, high)


def draw(seed: int, stratum: str, position: int) -> float:
    """The item's seeded draw, uniform in [0, 1): the same on every machine and run."""
    digest = hashlib.blake2b(f"{seed}\x1f{stratum}\x1f{position}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def take(
    items: Sequence[T], limit: int | None, seed: int, part: Part | None = None, stratum: str = ""
) -> list[T]:
    """`limit` items chosen uniformly with `seed`, kept in their original order; with `part`,
    only those of them whose draw (`draw(seed, stratum, position)`) lies in the part."""
    if limit is None or limit >= len(items):
        chosen = list(range(len(items)))
    else:
        chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    if part is not None:
        low, high = part
        chosen = [i for i in chosen if low <= draw(seed, stratum, i) < high]
    return [items[i] for i in chosen]
