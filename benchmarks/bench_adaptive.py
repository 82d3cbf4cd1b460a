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
import time
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


def _timed(spec) -> float:
    """Wall seconds of the run (the time of trials stored by an earlier, resumed run is the
    sum of their stored seconds, so an interrupted benchmark still reports the whole)."""
    start = time.perf_counter()
    run_study(spec)
    elapsed = time.perf_counter() - start
    with ResultsStore(spec.output, readonly=True) as store:
        stored = sum(t["seconds"] or 0.0 for t in store.trials())
    return max(elapsed, stored)


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
        if only is not None:
            _timed(_spec(probe, limit, levels, files[only],
                         precision if only == "adaptive" else None))  # fmt: skip
            continue
        seconds = {
            "adaptive": _timed(_spec(probe, limit, levels, files["adaptive"], precision)),
            "exhaustive": _timed(_spec(probe, limit, levels, files["exhaustive"], None)),
        }
        full, fast = _summary(files["exhaustive"]), _summary(files["adaptive"])
        base_full = full[("baseline", None)]["score"]
        n_full = sum(v["items"] for v in full.values())
        n_fast = sum(v["items"] for v in fast.values())
        totals["exhaustive"][0] += n_full
        totals["adaptive"][0] += n_fast
        totals["exhaustive"][1] += seconds["exhaustive"]
        totals["adaptive"][1] += seconds["adaptive"]
        lines += [f"**{probe}**, `--limit {limit}`: exhaustive {n_full:,} items in "
                  f"{seconds['exhaustive']:.0f} s, adaptive {n_fast:,} items in "
                  f"{seconds['adaptive']:.0f} s ({n_full / n_fast:.1f}x fewer items).", "",
                  "| sweep | level | exhaustive drop | adaptive interval | items (of pool) | "
                  "stopped | inside |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for (sweep, level), row in sorted(full.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            if sweep == "baseline":
                continue
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
    if only is not None:
        return f"ran the {only} runs only", True
    ratio = totals["exhaustive"][0] / totals["adaptive"][0]
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
        choices=("adaptive", "exhaustive"),
        help="run one kind (two processes can run the two kinds at once); "
        "a last run without --only resumes both and writes the table",
    )
    args = parser.parse_args()
    probes = [(p.split(":")[0], int(p.split(":")[1])) for p in args.probe]
    levels = tuple(float(v) for v in args.levels.split(","))
    load = os.getloadavg()[0]
    body, _ = run(probes, levels, args.precision, args.folder, args.only)
    if args.only is not None:
        print(body)
        return
    command = (
        "python benchmarks/bench_adaptive.py "
        + " ".join(f"--probe {p}" for p in args.probe)
        + f" --levels {args.levels} --precision {args.precision:g} --write BENCHMARKS.md"
    )
    text = (f"{MARK}\n## Adaptive evaluation: `--precision {args.precision:g}` vs every item\n\n"
            f"SmolLM2-135M, the `global-pruning` preset's three sweeps (attention, feed-forward, "
            f"overall) at levels {args.levels}, seed 0; {platform.machine()}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}, 1-minute load "
            f"average {load:.1f} at the start (a shared machine: wall times are indicative).\n"
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
