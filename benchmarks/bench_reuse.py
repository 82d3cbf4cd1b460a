"""Prefix reuse on the `final-layer` preset: the 18-trial sweep with and without reuse, in one run.

Two study workers load SmolLM2 (the trials of `knowcomp run --preset final-layer`, with
`--probes` and `--limit`): one with the prefix cache (its baseline trial keeps the LM head's
inputs; every final-layer trial applies its pruned head to them), one with the cache off (every
trial runs the whole network). Their trials run in alternating order, trial by trial, so a load
change on a shared machine hits both alike. The plain worker runs every `--plain-every`-th
trial only (each costs a whole evaluation), and the baseline too unless `--no-plain-baseline`;
one plain evaluation is the mean plain trial, and the plain sweep 18 of them, as the table
says. Reported: the baseline and a trial on both sides, the sweep's total, the memory the cache
keeps per probe, and whether the two sides' records agree (largest log-likelihood difference,
identical picks).

    python benchmarks/bench_reuse.py --probes lama-trex,piqa,boolq --limit 50 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from knowcomp.study.presets import preset_spec
from knowcomp.study.trials import validate
from knowcomp.study.worker import ModelWorker

MARK = "<!-- bench_reuse -->"
MODEL = "smollm2-135m"


def timed_run(worker: ModelWorker, trial: Any, probes: list[str]) -> tuple[float, Any]:
    start = time.perf_counter()
    outcome = worker.run(trial, probes, study="bench", spec_hash="bench")
    return time.perf_counter() - start, outcome


def _numbers(record: dict[str, Any]) -> list[float]:
    """A record's log-likelihoods (choice tasks) or reciprocal rank (LAMA)."""
    if "loglikelihoods" in record:
        return list(record["loglikelihoods"])
    return [record[k] for k in ("mrr",) if k in record]


def _picks(record: dict[str, Any]) -> tuple:
    return tuple(record.get(k) for k in ("chosen", "chosen_norm", "rank", "prediction"))


def agreement(a: Any, b: Any) -> tuple[float, int, int]:
    """Largest |Δ| of any number, records with identical picks, and records compared."""
    worst, same, total = 0.0, 0, 0
    for ra, rb in zip(a.results, b.results, strict=True):
        for x, y in zip(ra["records"], rb["records"], strict=True):
            total += 1
            same += _picks(x) == _picks(y)
            for p, q in zip(_numbers(x), _numbers(y), strict=True):
                worst = max(worst, abs(p - q))
    return worst, same, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", default="lama-trex,piqa,boolq")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument(
        "--plain-every", type=int, default=3, help="every n-th trial also runs plain (1: all)"
    )
    parser.add_argument(
        "--plain-baseline", action=argparse.BooleanOptionalAction, default=True,
        help="also run the baseline without the cache (one more plain evaluation)",
    )  # fmt: skip
    parser.add_argument("--write", help="Markdown file to put the section in")
    args = parser.parse_args()
    probes = args.probes.split(",")
    spec = replace(preset_spec("final-layer", (MODEL,)), probes=tuple(probes), limit=args.limit)
    trials = validate(spec)
    baseline, sweep = trials[0], trials[1:]
    assert baseline.recipe is None and all("final_layer" in t.recipe for t in sweep)

    # the baseline must run (and keep its states), not come from the baseline cache
    os.environ["KNOWCOMP_BASELINE_CACHE"] = "off"
    reuse, plain = ModelWorker(MODEL), ModelWorker(MODEL, reuse_budget_mb=0)
    loads = [os.getloadavg()[0]]
    # the baseline, plain first: the plain side pays the data caches' first reads
    plain_base = timed_run(plain, baseline, probes)[0] if args.plain_baseline else None
    reuse_base, _ = timed_run(reuse, baseline, probes)
    held = dict(reuse.pipeline.prefix.held)
    reuse_times, plain_times, worst, same, total = [], [], 0.0, 0, 0
    for i, trial in enumerate(sweep):
        run_plain = i % args.plain_every == 0
        order = [("plain", plain), ("reuse", reuse)] if i % 2 else [("reuse", reuse),
                                                                     ("plain", plain)]  # fmt: skip
        outcomes = {}
        for side, worker in order:
            if side == "plain" and not run_plain:
                continue
            took, outcomes[side] = timed_run(worker, trial, probes)
            (plain_times if side == "plain" else reuse_times).append(took)
        if run_plain:
            w, s, n = agreement(outcomes["reuse"], outcomes["plain"])
            worst, same, total = max(worst, w), same + s, total + n
        loads.append(os.getloadavg()[0])
        print(f"{trial.label}: reuse {reuse_times[-1]:.1f} s"
              + (f", plain {plain_times[-1]:.1f} s" if run_plain else ""), flush=True)  # fmt: skip
    n = len(sweep)
    one_plain = sum(plain_times) / len(plain_times)  # a plain trial: one evaluation
    reuse_sweep = sum(reuse_times)
    measured = "all" if len(plain_times) == n else f"{len(plain_times)} of {n}"
    memory = ", ".join(f"{p}: {b / 2**20:.1f} MB" for p, b in held.items() if p)
    base_cell = "not run" if plain_base is None else f"{plain_base:.1f}"
    flags = "" if args.plain_baseline else " --no-plain-baseline"
    command = (f"python benchmarks/bench_reuse.py --probes {args.probes} --limit {args.limit} "
               f"--plain-every {args.plain_every}{flags} --write BENCHMARKS.md")  # fmt: skip
    sweep_ratio = reuse_sweep / one_plain
    total_ratio = (reuse_base + reuse_sweep) / one_plain
    section = f"""{MARK}
## Prefix reuse: the `final-layer` preset with and without reuse

SmolLM2-135M, float32, probes {", ".join(probes)} at `--limit {args.limit}`, the preset's
{n} final-layer trials (L1 unstructured and L1 structured rows, 10-90%) after its baseline;
{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__};
1-minute load average {min(loads):.1f} to {max(loads):.1f} (a machine other jobs share).
Both sides in one process, trial by trial in alternating order; the plain side ran {measured}
trials (its sweep total is their mean x {n}).
Command: `{command}`

| | plain (s) | with reuse (s) |
|---|---|---|
| baseline (with reuse it also keeps the states) | {base_cell} | {reuse_base:.1f} |
| one final-layer trial (mean) | {one_plain:.1f} | {reuse_sweep / n:.1f} |
| {n}-trial sweep | {one_plain * n:.1f} | {reuse_sweep:.1f} |

With reuse, the whole {n}-trial sweep costs **{sweep_ratio:.2f}x** one plain evaluation (a
plain trial: the evaluation plus compressing the head; goal: at most 1.5x), and baseline plus
sweep **{total_ratio:.2f}x**. Memory the prefix cache keeps (the head's inputs at the scored
positions, float32): {memory}. Records of the trials run both ways: {same} of {total} with
identical picks, largest log-likelihood difference {worst:.1e}.
{MARK}"""
    if args.write:
        from bench_global_prune import write_section

        write_section(Path(args.write), section, MARK)
    print(section)


if __name__ == "__main__":
    main()
