"""Adaptive evaluation (`--precision`) against exhaustive scoring on the `global-pruning` grid.

For each probe, the preset's sweeps (global L1 pruning of attention, feed-forward and all
linear layers; `--levels` picks levels of its grid) run twice on SmolLM2: once scoring every
item of the `--limit` subset, once with `--precision`. Reported: items scored (records, the
baseline's included) and wall time of each run, and for every compressed trial whether the
exhaustive drop (baseline minus trial, on every item) lies inside the adaptive run's stored
confidence-sequence interval. Each run writes its own results file; rerunning resumes.

    python benchmarks/bench_adaptive.py --probe lama-trex:50 --probe piqa:500 \\
        --levels 0.1,0.5,0.9 --precision 2 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import replace
from pathlib import Path

import torch

from knowcomp.probes.categories import headline_name
from knowcomp.store import ResultsStore
from knowcomp.study import preset_spec, run_study

MARK = "<!-- bench_adaptive -->"


def _spec(probe: str, limit: int, levels: tuple[float, ...], out: Path, precision):
    spec = preset_spec("global-pruning", ("smollm2-135m",))
    sweeps = tuple(replace(s, levels=levels) for s in spec.sweeps)
    return spec.with_overrides(name=f"bench-adaptive-{probe}", probes=(probe,), limit=limit,
                               sweeps=sweeps, output=out, precision=precision)  # fmt: skip


def _timed(spec) -> None:
    """Run (or resume) the study; each trial stores its own wall seconds."""
    run_study(spec)


def _summary(out: Path) -> dict:
    """Per trial (sweep, level): headline in points, records scored, and the stored drop."""
    with ResultsStore(out, readonly=True) as store:
        rows = store.rows()
        records = {(r["trial_key"], r["probe"]): len(store.records(r["trial_key"], r["probe"]))
                   for r in rows}  # fmt: skip
    out_rows = {}
    for r in rows:
        name = headline_name(r["metrics"])
        out_rows[(r["sweep"], r["level"])] = {
            "score": 100 * r["metrics"][name], "items": records[(r["trial_key"], r["probe"])],
            "sequential": r.get("sequential"), "seconds": r["seconds"],
        }  # fmt: skip
    return out_rows


def run(probes: list[tuple[str, int]], levels: tuple[float, ...], precision: float,
        folder: Path, only: str | None = None) -> tuple[str, bool]:  # fmt: skip
    lines, all_inside, totals = [], True, {"exhaustive": [0, 0.0], "adaptive": [0, 0.0]}
    for probe, limit in probes:
        files = {kind: folder / f"{probe}-{limit}-{kind}.sqlite"
                 for kind in ("exhaustive", "adaptive")}  # fmt: skip
        if only in ("adaptive", "exhaustive"):
            _timed(_spec(probe, limit, levels, files[only],
                         precision if only == "adaptive" else None))  # fmt: skip
            continue
        if only is None:
            _timed(_spec(probe, limit, levels, files["adaptive"], precision))
            _timed(_spec(probe, limit, levels, files["exhaustive"], None))
        full, fast = _summary(files["exhaustive"]), _summary(files["adaptive"])
        both = sorted(set(full) & set(fast), key=lambda k: (k[0] != "baseline", k[0], k[1] or 0))
        grid = 1 + 3 * len(levels)
        missing = f" ({grid - len(both)} of the grid's {grid} trials not run in both)" * (
            len(both) < grid)  # fmt: skip
        if ("baseline", None) not in both:
            lines += [f"**{probe}**: no baseline in both files yet", ""]
            continue
        base_full = full[("baseline", None)]["score"]
        n_full = sum(full[k]["items"] for k in both)
        n_fast = sum(fast[k]["items"] for k in both)
        seconds = {"exhaustive": sum(full[k]["seconds"] for k in both),
                   "adaptive": sum(fast[k]["seconds"] for k in both)}  # fmt: skip
        totals["exhaustive"][0] += n_full
        totals["adaptive"][0] += n_fast
        totals["exhaustive"][1] += seconds["exhaustive"]
        totals["adaptive"][1] += seconds["adaptive"]
        lines += [f"**{probe}**, `--limit {limit}`{missing}: exhaustive {n_full:,} items in "
                  f"{seconds['exhaustive']:.0f} s, adaptive {n_fast:,} items in "
                  f"{seconds['adaptive']:.0f} s ({n_full / n_fast:.1f}x fewer items).", "",
                  "| sweep | level | exhaustive drop | adaptive interval | items (of pool) | "
                  "stopped | inside |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for sweep, level in both:
            if sweep == "baseline":
                continue
            row = full[(sweep, level)]
            drop = base_full - row["score"]
            seq = fast[(sweep, level)]["sequential"]
            d = seq["drop"]
            inside = d["low"] <= drop <= d["high"]
            all_inside &= inside
            lines.append(f"| {sweep} | {level:g} | {drop:.1f} | {d['value']:.1f} [{d['low']:.1f}, "
                         f"{d['high']:.1f}] | {d['items']} ({seq['pool']}) | {seq['stop']} | "
                         f"{'yes' if inside else '**no**'} |")  # fmt: skip
        base = fast[("baseline", None)]
        lines += ["", f"The adaptive baseline scored {base['items']:,} of "
                  f"{full[('baseline', None)]['items']:,} items.", ""]  # fmt: skip
    if only in ("adaptive", "exhaustive"):
        return f"ran the {only} runs only", True
    ratio = totals["exhaustive"][0] / max(totals["adaptive"][0], 1)
    lines.insert(
        0,
        f"Over the grid: exhaustive {totals['exhaustive'][0]:,} items in "
        f"{totals['exhaustive'][1]:.0f} s, adaptive {totals['adaptive'][0]:,} items in "
        f"{totals['adaptive'][1]:.0f} s: **{ratio:.1f}x fewer items**; every exhaustive "
        f"drop inside its adaptive interval: **{'yes' if all_inside else 'no'}**.\n",
    )
    return "\n".join(lines), all_inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe", action="append", required=True,
                        help="PROBE:LIMIT, e.g. piqa:500 (repeat)")  # fmt: skip
    parser.add_argument("--levels", default="0.1,0.5,0.9")
    parser.add_argument("--precision", type=float, default=2.0)
    parser.add_argument("--folder", type=Path, default=Path("runs/bench-adaptive"))
    parser.add_argument("--write", type=Path)
    parser.add_argument(
        "--only",
        choices=("adaptive", "exhaustive", "summary"),
        help="run one kind (two processes can run the two kinds at once), or none (summary): "
        "the table of the trials both files have; without it, both run (or resume) first",
    )
    args = parser.parse_args()
    probes = [(p.split(":")[0], int(p.split(":")[1])) for p in args.probe]
    levels = tuple(float(v) for v in args.levels.split(","))
    load = os.getloadavg()[0]
    body, _ = run(probes, levels, args.precision, args.folder, args.only)
    if args.only in ("adaptive", "exhaustive"):
        print(body)
        return
    command = (
        "python benchmarks/bench_adaptive.py "
        + " ".join(f"--probe {p}" for p in args.probe)
        + f" --levels {args.levels} --precision {args.precision:g} --write BENCHMARKS.md"
    )
    when = (f"{torch.get_num_threads()} threads, 1-minute load average {load:.1f} at the start "
            "(a shared machine: wall times are indicative)") if args.only is None else (
            "the table summarizes runs made before it (with `--only adaptive` and `--only "
            "exhaustive`, possibly in parts, resumed): its seconds are the trials' stored "
            "seconds summed")  # fmt: skip
    text = (f"{MARK}\n## Adaptive evaluation: `--precision {args.precision:g}` vs every item\n\n"
            f"SmolLM2-135M, the `global-pruning` preset's three sweeps (attention, feed-forward, "
            f"overall) at levels {args.levels}, seed 0; {platform.machine()}, "
            f"torch {torch.__version__}, {when}.\n"
            f"Command: `{command}`\n\n{body}\n{MARK}\n")  # fmt: skip
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.exists() else ""
        if MARK in old:
            head, _, rest = old.partition(MARK)
            _, _, tail = rest.partition(MARK)
            old = head + tail.lstrip("\n")
        args.write.write_text(old.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
