"""`--limit N` with a seed: the same subset every time, in the data's own order."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def take(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """`limit` items chosen uniformly with `seed`, kept in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]
