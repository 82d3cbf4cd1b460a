"""bfloat16 against float32 on CPU: the same probes, items and model, in one run.

SmolLM2-135M is loaded twice, in float32 (the studies' numbers) and in bfloat16, and scores
LAMA T-REx (`--lama` facts per relation) and PIQA + ARC-Easy (`--items` each) with the same
subsets. The two dtypes run in alternating rounds (`--rounds`), each side's best round kept,
so a load change on a shared machine hits both alike. Reported: the speed-up, the share of
identical picks (multiple choice: `acc` picks; LAMA: the top-1 token, and whether the fact is
right at P@1), and the largest log-likelihood difference of any choice.

    python benchmarks/bench_bf16.py --lama 20 --items 200 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from knowcomp.models import load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.registry import get_probe

MARK = "<!-- bench_bf16 -->"


def run_probes(loaded: LoadedModel, lama: int, items: int) -> tuple[float, dict[str, Any]]:
    """Seconds, and each probe's records, for one pass over the benchmark's probes."""
    start = time.perf_counter()
    out = {
        "lama-trex": get_probe("lama-trex").run(loaded, RunOptions(limit=lama, seed=0)),
        "piqa": get_probe("piqa").run(loaded, RunOptions(limit=items, seed=0)),
        "arc-easy": get_probe("arc-easy").run(loaded, RunOptions(limit=items, seed=0)),
    }
    return time.perf_counter() - start, out


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Agreement of two passes, per probe."""
    rows: dict[str, dict[str, float]] = {}
    for probe in ("piqa", "arc-easy"):
        ra, rb = a[probe].records, b[probe].records
        same = sum(x["chosen"] == y["chosen"] for x, y in zip(ra, rb, strict=True))
        worst = max(
            abs(p - q)
            for x, y in zip(ra, rb, strict=True)
            for p, q in zip(x["loglikelihoods"], y["loglikelihoods"], strict=True)
        )
        rows[probe] = {
            "n": len(ra), "same": same / len(ra), "max_ll": worst,
            "acc_a": a[probe].metrics["acc"], "acc_b": b[probe].metrics["acc"],
        }  # fmt: skip
    ra = [r for r in a["lama-trex"].records if "rank" in r]
    rb = {r["uuid"]: r for r in b["lama-trex"].records if "rank" in r}
    pairs = [(x, rb[x["uuid"]]) for x in ra if x["uuid"] in rb]
    rows["lama-trex"] = {
        "n": len(pairs),
        "same": sum(x["prediction"] == y["prediction"] for x, y in pairs) / len(pairs),
        "same_p1": sum((x["rank"] == 1) == (y["rank"] == 1) for x, y in pairs) / len(pairs),
        "acc_a": a["lama-trex"].metrics["p@1_micro"],
        "acc_b": b["lama-trex"].metrics["p@1_micro"],
    }
    return rows


def _row(probe: str, r: dict[str, float]) -> str:
    if "max_ll" in r:  # a choice task
        agree, right, worst = f"{r['same']:.1%}", f"{r['same']:.1%}", f"{r['max_ll']:.3f}"
    else:  # LAMA: the top-1 token, and whether the fact is right at P@1
        agree, right, worst = f"{r['same']:.1%} (top-1 token)", f"{r['same_p1']:.1%}", "–"
    return (f"| {probe} | {r['n']} | {agree} | {right} | {worst} | {r['acc_a']:.3f} | "
            f"{r['acc_b']:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lama", type=int, default=20, help="T-REx facts per relation")
    parser.add_argument("--items", type=int, default=200, help="PIQA and ARC-Easy items each")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", help="Markdown file to put the section in")
    args = parser.parse_args()

    models = {dtype: load_model("smollm2-135m", dtype=dtype) for dtype in ("float32", "bfloat16")}
    run_probes(models["float32"], 1, 2)  # warm-up: data caches, kernels
    run_probes(models["bfloat16"], 1, 2)
    seconds: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    results: dict[str, Any] = {}
    loads = []
    for _ in range(args.rounds):
        for dtype, loaded in models.items():
            took, results[dtype] = run_probes(loaded, args.lama, args.items)
            seconds[dtype].append(took)
            loads.append(os.getloadavg()[0])
    best = {dtype: min(s) for dtype, s in seconds.items()}
    speedup = best["float32"] / best["bfloat16"]
    rows = compare(results["float32"], results["bfloat16"])
    table = "\n".join(_row(probe, r) for probe, r in rows.items())
    runs = ", ".join(f"{d}: {' / '.join(f'{x:.1f}' for x in s)} s" for d, s in seconds.items())
    section = f"""{MARK}
## bfloat16 vs float32 on CPU: the same probes, items and model

SmolLM2-135M loaded in each dtype; LAMA T-REx ({args.lama} facts per relation, next-token),
PIQA and ARC-Easy ({args.items} items each), the same `--seed 0` subsets; {os.cpu_count()}
cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}. Alternating rounds,
each dtype's best of {args.rounds} ({runs}; 1-minute load average up to {max(loads):.1f}).
Command: `python benchmarks/bench_bf16.py --lama {args.lama} --items {args.items} --write BENCHMARKS.md`

| | float32 (s) | bfloat16 (s) | speed-up |
|---|---|---|---|
| all three probes | {best["float32"]:.1f} | {best["bfloat16"]:.1f} | **{speedup:.2f}x** |

| probe | scored | same pick | same right/wrong at P@1 | max \\|Δ log-lik\\| | float32 score | bfloat16 score |
|---|---|---|---|---|---|---|
{table}

Scores are `acc` for the choice tasks and P@1 micro for LAMA.
{MARK}"""  # noqa: E501
    if args.write:
        from bench_global_prune import write_section

        write_section(Path(args.write), section, MARK)
    print(section)


if __name__ == "__main__":
    main()
