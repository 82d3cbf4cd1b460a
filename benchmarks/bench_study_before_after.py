"""A whole study's wall time with knowcomp as it was before a revision and as it is now.

The same `knowcomp run --preset ...` command runs twice in one benchmark, each in its own
process from an empty baseline cache: once with the source tree of `--before` (a git
revision, extracted with `git archive` into a temporary folder) and once with this checkout.
Reported: each side's wall time and the sum of its trials' stored seconds, per trial kind,
and whether the two results files hold the same scores (every stored metric, trial by trial).

The default `--before` is the last commit before the baseline cache, prefix reuse and the
dry-run estimate were added (issue 16), so the figure is what that work saved.

    python benchmarks/bench_study_before_after.py --preset all --limit 50 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from knowcomp.store import ResultsStore
from knowcomp.study.presets import DEFAULT_PROBES

MODEL = "smollm2-135m"
MARK = "<!-- bench_study_before_after -->"
BEFORE = "b66f715"  # the parent of the baseline cache's commit (df0a0f6)
REPO = Path(__file__).resolve().parents[1]
CLI = "from knowcomp.cli.main import main; main()"


def _extract(revision: str, into: Path) -> Path:
    """The `src` tree of a git revision, unpacked under `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def _run_side(src: Path, args, work: Path, name: str) -> tuple[float, Path]:
    """Run the study with the knowcomp under `src`; its wall seconds and results file."""
    env = dict(os.environ, PYTHONPATH=str(src), KNOWCOMP_BASELINE_CACHE=str(work / f"{name}-cache"))
    found = subprocess.run([sys.executable, "-c", "import knowcomp; print(knowcomp.__file__)"],
                           env=env, check=True, capture_output=True, text=True).stdout  # fmt: skip
    if not Path(found.strip()).is_relative_to(src):
        raise SystemExit(f"{name}: imported {found.strip()}, not the tree under {src}")
    out = work / f"{name}.sqlite"
    command = [sys.executable, "-c", CLI, "run", "--preset", args.preset, "--model", MODEL,
               "--probes", args.probes, "--limit", str(args.limit), "--out", str(out),
               "--no-report"]  # fmt: skip
    print(f"{name}: {' '.join(command[3:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return time.perf_counter() - start, out


def _trials(path: Path) -> dict[tuple, tuple[float, dict]]:
    """(sweep, level, seed, probe) -> (the trial's stored seconds, its metrics)."""
    with ResultsStore(path, readonly=True) as store:
        return {(r["sweep"], r["level"], r["seed"], r["probe"]): (r["seconds"] or 0.0,
                                                                  r["metrics"])
                for r in store.rows()}  # fmt: skip


def _same_scores(before: dict, after: dict) -> tuple[int, int, float]:
    """Results present on both sides, how many have every metric equal, the largest gap."""
    both = set(before) & set(after)
    same, gap = 0, 0.0
    for key in both:
        old, new = before[key][1], after[key][1]
        diffs = [abs(old[m] - new[m]) for m in old.keys() & new.keys()
                 if isinstance(old[m], float) and isinstance(new[m], float)
                 and math.isfinite(old[m]) and math.isfinite(new[m])]  # fmt: skip
        gap = max([gap, *diffs])
        same += all(d == 0.0 for d in diffs)
    return len(both), same, gap


def _seconds_by_kind(rows: dict) -> dict[str, float]:
    """Trial seconds summed per sweep (each trial counted once, not once per probe)."""
    seen, kinds = set(), {}
    for (sweep, level, seed, _probe), (seconds, _) in rows.items():
        if (sweep, level, seed) not in seen:
            seen.add((sweep, level, seed))
            kinds[sweep] = kinds.get(sweep, 0.0) + seconds
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="all")
    parser.add_argument("--probes", default=",".join(DEFAULT_PROBES))
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with")
    parser.add_argument("--write", help="Markdown file to put the section in")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kc-before-after-"))
    loads = [os.getloadavg()[0]]
    before_wall, before_file = _run_side(_extract(args.before, work / "before"), args, work,
                                         "before")  # fmt: skip
    loads.append(os.getloadavg()[0])
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    after_wall, after_file = _run_side(REPO / "src", args, work, "after")
    loads.append(os.getloadavg()[0])
    before, after = _trials(before_file), _trials(after_file)
    compared, same, gap = _same_scores(before, after)
    old_kinds, new_kinds = _seconds_by_kind(before), _seconds_by_kind(after)
    rows = "\n".join(f"| {kind} | {old_kinds.get(kind, 0.0):.0f} | {new:.0f} | "
                     f"{old_kinds.get(kind, 0.0) / new:.2f}x |"
                     for kind, new in new_kinds.items() if new > 0)  # fmt: skip
    old_total, new_total = sum(old_kinds.values()), sum(new_kinds.values())
    command = (f"python benchmarks/bench_study_before_after.py --preset {args.preset} --probes "
               f"{args.probes} --limit {args.limit} --before {args.before} "
               "--write BENCHMARKS.md")  # fmt: skip
    speedup = before_wall / after_wall
    section = f"""{MARK}
## A whole study before and after the baseline cache and prefix reuse

SmolLM2-135M, float32, CPU; `knowcomp run --preset {args.preset}` with the probes
{args.probes.replace(",", ", ")} at `--limit {args.limit}`, each side in its own process from an
empty baseline cache, `before` ({args.before}) first, then `after` ({head});
{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__};
1-minute load average {min(loads):.1f} to {max(loads):.1f}.
Command: `{command}`

| trials | before (s) | after (s) | before / after |
|---|---|---|---|
{rows}
| **all trials** | {old_total:.0f} | {new_total:.0f} | {old_total / new_total:.2f}x |
| **study (wall, with loading)** | {before_wall:.0f} | {after_wall:.0f} | **{speedup:.2f}x** |

Scores: {same} of {compared} trial-probe results have every stored metric identical on both
sides (largest difference {gap:.1e}).
{MARK}"""
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_global_prune import write_section

        write_section(Path(args.write), section, MARK)
    print(section)


if __name__ == "__main__":
    main()
