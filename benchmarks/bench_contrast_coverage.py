"""Coverage of a finding's contrast interval with few relations: t on Welch-Satterthwaite
degrees of freedom (what `knowcomp.analysis.intervals.contrast` uses) against the normal
interval over the same clustered standard error (what it used before).

Each data set is one finding's per-item contrast (lost under compression A minus lost under
compression B) over facts in G relations, each relation with its own rates, so facts of one
relation are correlated; the true contrast is known. Two designs:

- `symmetric`: the loss rates of a relation are normal around 0.30 and 0.15 (SD 0.10), every
  fact right at baseline with probability 0.6, 100 facts per relation (the test's design);
- `skewed`: baseline knowledge uniform in [0.05, 0.95] per relation and loss rates uniform in
  [0.1, 0.5] and [0, 0.3], 50-150 facts per relation: relations differ a lot and the
  contrast's relation means are skewed.

    python benchmarks/bench_contrast_coverage.py --reps 2000
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from knowcomp.analysis.intervals import contrast


def symmetric(rng: np.random.Generator, groups: int) -> tuple[np.ndarray, np.ndarray, float]:
    a = np.clip(0.3 + 0.1 * rng.standard_normal(groups), 0, 1)
    b = np.clip(0.15 + 0.1 * rng.standard_normal(groups), 0, 1)
    codes = np.repeat(np.arange(groups), 100)
    right = rng.random(codes.size) < 0.6
    lost_a, lost_b = rng.random(codes.size) < a[codes], rng.random(codes.size) < b[codes]
    return right * (lost_a.astype(float) - lost_b), codes, 0.6 * 0.15


def skewed(rng: np.random.Generator, groups: int) -> tuple[np.ndarray, np.ndarray, float]:
    p = rng.uniform(0.05, 0.95, groups)
    a, b = rng.uniform(0.1, 0.5, groups), rng.uniform(0.0, 0.3, groups)
    codes = np.repeat(np.arange(groups), rng.integers(50, 151, groups))
    right = rng.random(codes.size) < p[codes]
    lost_a, lost_b = rng.random(codes.size) < a[codes], rng.random(codes.size) < b[codes]
    return right * (lost_a.astype(float) - lost_b), codes, 0.5 * (0.3 - 0.15)


def coverage(design, groups: int, reps: int) -> tuple[float, float]:
    rng = np.random.default_rng(groups)
    t_cover = z_cover = 0
    for _ in range(reps):
        values, codes, truth = design(rng, groups)
        e = contrast([(values, codes)])
        t_cover += e.low <= truth <= e.high
        z_cover += abs(e.value - truth) <= stats.norm.ppf(0.975) * e.se
    return t_cover / reps, z_cover / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args()
    print("| design | relations | t (Satterthwaite df) | normal (z) |")
    print("|---|---|---|---|")
    for name, design in (("symmetric", symmetric), ("skewed", skewed)):
        for groups in (5, 10, 30):
            t_cover, z_cover = coverage(design, groups, args.reps)
            print(f"| {name} | {groups} | {100 * t_cover:.1f}% | {100 * z_cover:.1f}% |")


if __name__ == "__main__":
    main()
