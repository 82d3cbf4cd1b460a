"""`knowcomp run --dry-run`'s estimate against the measured run, on a built-in preset.

One process: estimate the study (`study.cost.estimate_study`, what `--dry-run` prints), then
run it (`study.run_study`, what `knowcomp run` does) from an empty baseline cache, and compare
each trial's estimate with the seconds the results file stores for it, and the totals. The
dry run stores the baselines it measured at the study's size in the baseline cache, as it does
for a user, so the run reuses them: the estimate counts them as free, and so does the run.

Run it on a quiet machine: the estimate measures the machine as it is while it measures, and a
load that changes between the dry run and the run moves the two apart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from knowcomp.store import ResultsStore
from knowcomp.study import run_study
from knowcomp.study.cost import estimate_study
from knowcomp.study.presets import DEFAULT_PROBES, preset_spec
from knowcomp.study.runner import PendingTrial
from knowcomp.study.trials import validate

MODEL = "smollm2-135m"
MARK = "<!-- bench_estimate -->"


def _kind(trial) -> str:
    if trial.recipe is None:
        return "baseline"
    return trial.sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="all")
    parser.add_argument("--probes", default=",".join(DEFAULT_PROBES))
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--write", help="Markdown file to put the section in")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kc-estimate-"))
    os.environ["KNOWCOMP_BASELINE_CACHE"] = str(work / "baselines")  # empty: a fair start
    spec = replace(preset_spec(args.preset, (MODEL,)), probes=tuple(args.probes.split(",")),
                   limit=args.limit, output=str(work / "results.sqlite"))  # fmt: skip
    trials = validate(spec)
    loads = [os.getloadavg()[0]]
    start = time.perf_counter()
    estimate = estimate_study(spec, [PendingTrial(t, list(spec.probes)) for t in trials])
    measuring = time.perf_counter() - start
    loads.append(os.getloadavg()[0])
    print(f"estimated {estimate.seconds:.0f} s (measuring took {measuring:.0f} s)", flush=True)
    start = time.perf_counter()
    summary = run_study(spec)
    wall = time.perf_counter() - start
    loads.append(os.getloadavg()[0])
    with ResultsStore(spec.output) as store:
        measured = {t["trial_key"]: t["seconds"] or 0.0 for t in store.trials()}
    by_kind: dict[str, list[float]] = {}
    for t in estimate.trials:
        pair = by_kind.setdefault(_kind(t.trial), [0, 0.0, 0.0, 0])
        pair[0] += 1
        pair[1] += t.seconds
        pair[2] += measured.get(t.trial.key, 0.0)
        pair[3] += t.reuse is not None
    rows = "\n".join(
        f"| {kind} | {n} | {'yes' if reused else ''} | {est:.0f} | {got:.0f} | {est / got:.2f} |"
        for kind, (n, est, got, reused) in by_kind.items() if got > 0
    )  # fmt: skip
    trial_est = sum(t.seconds for t in estimate.trials)
    trial_got = sum(measured.get(t.trial.key, 0.0) for t in estimate.trials)
    ratio = estimate.seconds / wall
    per_trial = trial_est / trial_got
    command = (f"python benchmarks/bench_estimate.py --preset {args.preset} --probes "
               f"{args.probes} --limit {args.limit} --write BENCHMARKS.md")  # fmt: skip
    section = f"""{MARK}
## `knowcomp run --dry-run`: the estimate against the measured run

SmolLM2-135M, float32, CPU; the `{args.preset}` preset ({len(trials)} trials) with the probes
{", ".join(spec.probes)} at `--limit {args.limit}`, from an empty baseline cache;
{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__};
1-minute load average {min(loads):.1f} to {max(loads):.1f}.
Command: `{command}`

The dry run's measuring took {measuring:.0f} s. Then the study ran ({summary.ran} trials).
Per trial kind (the estimate and the run's stored seconds per trial, summed):

| trials | n | reuse the baseline's states | estimate (s) | measured (s) | estimate / measured |
|---|---|---|---|---|---|
{rows}
| **all trials** | {len(trials)} | | {trial_est:.0f} | {trial_got:.0f} | {per_trial:.2f} |
| **study (wall, with loading)** | | | {estimate.seconds:.0f} | {wall:.0f} | **{ratio:.2f}** |

The whole study's estimate is {ratio:.2f}x its measured wall time (goal: within 25%, i.e.
0.75x to 1.25x).
{MARK}"""
    if args.write:
        from bench_global_prune import write_section

        write_section(Path(args.write), section, MARK)
    print(section)


if __name__ == "__main__":
    main()
