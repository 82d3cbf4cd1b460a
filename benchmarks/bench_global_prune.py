"""Global L1 pruning of SmolLM2's `overall` group: knowcomp's radix select against
`torch.nn.utils.prune.global_unstructured` (the study's call), in one run.

Each method runs in its own fresh process: it loads the model, prunes while a thread samples
the resident memory every millisecond, and reports the time and the peak memory above the
level before pruning. Both must zero exactly k weights, none above the k-th smallest magnitude.

    python benchmarks/bench_global_prune.py --level 0.5 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import threading
import time
from pathlib import Path

import psutil
import torch

MARK = "<!-- bench_global_prune -->"
REFERENCE = "torch.nn.utils.prune"


class RssPeak:
    """Peak resident memory above the level at start, sampled every millisecond."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start_rss = self.process.memory_info().rss
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start_rss) / 2**20


def _prune(method: str, level: float, k: int, modules: list) -> float:
    from knowcomp.compress.pruning import L1Unstructured
    from knowcomp.modules.layers import float_weight_out_in

    start = time.perf_counter()
    if method == REFERENCE:
        import torch.nn.utils.prune as prune

        params = [(m, "weight") for m in modules]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=k)
        for m in modules:
            prune.remove(m, "weight")
    else:
        with torch.no_grad():
            L1Unstructured(level=level).prune([float_weight_out_in(m) for m in modules], seed=0)
    return time.perf_counter() - start


def _run(method: str, level: float, queue) -> None:
    from knowcomp.compress import CompressionSession, parse_recipe
    from knowcomp.models import load_model

    loaded = load_model("smollm2-135m")
    session = CompressionSession(loaded)
    layers = session.plan(parse_recipe(f"prune:l1_unstructured:overall:{level}"))[0].layers
    modules = [session.module(layer.name) for layer in layers]
    k = int(level * sum(m.weight.numel() for m in modules) + 0.5)
    with RssPeak() as memory:
        seconds = _prune(method, level, k, modules)
    # correctness, after the measurement, against the untouched magnitudes
    fresh = dict(load_model("smollm2-135m").model.named_modules())
    originals = [fresh[layer.name].weight.detach().abs() for layer in layers]
    kth = torch.kthvalue(torch.cat([o.flatten() for o in originals]), k).values.item()
    queue.put(
        {
            "method": method,
            "seconds": seconds,
            "extra_peak_mb": memory.extra_mb,
            "zeros": sum(int((m.weight == 0).sum()) for m in modules),
            "k": k,
            "kth": kth,
            "largest_pruned": max(
                float(o[m.weight == 0].max()) for m, o in zip(modules, originals, strict=True)
            ),
            "weights": sum(m.weight.numel() for m in modules),
        }
    )


def measure(method: str, level: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(method, level, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def write_section(path: Path, section: str, mark: str | None = None) -> None:
    """Replace the part of `path` between two `mark` lines with `section`, or append it.

    `mark` defaults to the section's own first line (each section opens and closes with its
    script's marker comment).
    """
    mark = mark or section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if mark in text:
        head, _, rest = text.partition(mark)
        _, _, tail = rest.partition(mark)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=float, default=0.5)
    parser.add_argument("--write", type=Path, help="Update this Markdown file's section.")
    args = parser.parse_args()
    ref, ours = (measure(m, args.level) for m in (REFERENCE, "knowcomp"))
    for r in (ref, ours):
        assert r["zeros"] == r["k"], r
        assert r["largest_pruned"] <= r["kth"], r
    print(json.dumps([ref, ours], indent=2))
    rows = "\n".join(
        f"| {r['method']} | {r['seconds']:.2f} | {r['extra_peak_mb']:.0f} | {r['zeros']:,} |"
        for r in (ref, ours)
    )
    section = f"""{MARK}
## Global L1 pruning: radix select vs `torch.nn.utils.prune.global_unstructured`

SmolLM2-135M, group `overall` ({ref["weights"]:,} weights), level {args.level},
{platform.machine()} with {torch.get_num_threads()} threads, torch {torch.__version__}.
Command: `python benchmarks/bench_global_prune.py --level {args.level} --write BENCHMARKS.md`

| method | seconds | peak memory above start (MB) | weights zeroed |
|---|---|---|---|
{rows}

Both zero exactly k = {ref["k"]:,} weights, none larger than the k-th smallest magnitude.
knowcomp is {ref["seconds"] / ours["seconds"]:.1f}x faster and its extra memory is
{ours["extra_peak_mb"]:.0f} MB against {ref["extra_peak_mb"]:.0f} MB: the reference joins every
weight into one tensor and keeps full-size masks and `weight_orig` copies until `remove`, while
knowcomp holds one layer's scores at a time, so its extra memory does not grow with the model.
{MARK}"""
    if args.write:
        write_section(args.write, section)
    print(section)


if __name__ == "__main__":
    main()
