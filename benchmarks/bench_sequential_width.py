"""How many items the betting confidence sequence needs to reach a half-width, by how many of
a probe's items a compression changes (simulated paired 0/1 items; no model, seconds to run).

    python benchmarks/bench_sequential_width.py
"""

from __future__ import annotations

import numpy as np

from knowcomp.analysis.sequential import chunk_ends, half_width, interval_path

CHANGED = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)  # share of items lost or gained (half each)
TARGETS = (5.0, 2.0, 1.0)  # half-widths in points
ITEMS = 40_000
REPS = 20


def main() -> None:
    ends = chunk_ends(ITEMS)
    print(f"Items checked when the half-width first reaches each target (median of {REPS} "
          f"seeded runs; checks at {ends[:5]}..., 1.5x apart):\n")  # fmt: skip
    print("| items changed | " + " | ".join(f"±{t:g} points" for t in TARGETS) + " |")
    print("|---|" + "---|" * len(TARGETS))
    for q in CHANGED:
        reached = {t: [] for t in TARGETS}
        for seed in range(REPS):
            rng = np.random.default_rng(seed)
            d = rng.choice([-1.0, 0.0, 1.0], p=[q / 2, 1 - q, q / 2], size=ITEMS)
            widths = [100 * half_width(e) for e in interval_path(d, ends)]
            for t in TARGETS:
                reached[t].append(next((n for n, w in zip(ends, widths, strict=True) if w <= t),
                                       np.inf))  # fmt: skip
        cells = [f"{np.median(reached[t]):,.0f}" for t in TARGETS]
        print(f"| {100 * q:g}% | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
