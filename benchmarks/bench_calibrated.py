"""Calibrated compression on SmolLM2-135M: perplexity on held-out text for GPTQ against
round-to-nearest at 4 bits, and SparseGPT and Wanda against magnitude pruning at 50%, all on
the `overall` group (every linear layer of the blocks).

One model load; each recipe is applied, evaluated and restored in turn. Calibration reads
`--nsamples` x `--seqlen` tokens of the default corpus (data directory passages, seeded order);
the perplexity text is the documents of that same seeded order that calibration never read,
joined with the end-of-text token and cut into windows of `--eval-seqlen` tokens.

    python benchmarks/bench_calibrated.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MARK = "<!-- bench_calibrated -->"
GROUP_SIZE = 64  # divides SmolLM2's 576 and 1536 inputs (128 does not divide 576)
RECIPES = [
    ("uncompressed", None),
    ("RTN 4-bit", f"quant:weight_only:overall:bits=4:group_size={GROUP_SIZE}"),
    ("GPTQ 4-bit", f"quant:gptq:overall:bits=4:group_size={GROUP_SIZE}"),
    ("magnitude 50%", "prune:l1_unstructured:overall:0.5:scope=layer"),
    ("SparseGPT 50%", "prune:sparsegpt:overall:0.5"),
    ("Wanda 50%", "prune:wanda:overall:0.5"),
]
EXPECTED = [("GPTQ 4-bit", "RTN 4-bit"), ("SparseGPT 50%", "magnitude 50%"),
            ("Wanda 50%", "magnitude 50%")]  # fmt: skip


def heldout_windows(tokenizer, documents: list[str], tokens: int, seqlen: int) -> torch.Tensor:
    """The first `tokens` tokens of `documents` (joined with end-of-text) as [n, seqlen]."""
    ids: list[int] = []
    for start in range(0, len(documents), 256):
        chunk = tokenizer(documents[start : start + 256], add_special_tokens=False)["input_ids"]
        for doc in chunk:
            ids.extend([*doc, tokenizer.eos_token_id])
        if len(ids) >= tokens:
            break
    n = min(tokens, len(ids)) // seqlen
    return torch.tensor(ids[: n * seqlen]).view(n, seqlen)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch: int = 4) -> float:
    nll, count = 0.0, 0
    for ids in windows.split(batch):
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        targets = ids[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               reduction="sum").item()  # fmt: skip
        count += targets.numel()
    return math.exp(nll / count)


def render(rows: list[dict], context: dict) -> tuple[str, bool]:
    """The BENCHMARKS.md section, and whether every expected ordering held."""
    by = {r["method"]: r["perplexity"] for r in rows}
    checks = [(a, b, by[a] < by[b]) for a, b in EXPECTED]
    table = "\n".join(
        f"| {r['method']} | `{r['recipe']}` | {100 * r['sparsity']:.1f}% | "
        f"{r['perplexity']:.2f} | "
        f"{'-' if r['compress_seconds'] is None else round(r['compress_seconds'])} |"
        for r in rows
    )
    verdicts = "\n".join(
        f"- {a} ({by[a]:.2f}) {'<' if ok else 'is NOT below'} {b} ({by[b]:.2f})"
        for a, b, ok in checks
    )
    base, rtn, gptq = by["uncompressed"], by["RTN 4-bit"], by["GPTQ 4-bit"]
    magnitude, sparsegpt = by["magnitude 50%"], by["SparseGPT 50%"]
    a = context["args"]
    command = (
        f"python benchmarks/bench_calibrated.py --nsamples {a['nsamples']} --seqlen "
        f"{a['seqlen']} --eval-tokens {a['eval_tokens']} --eval-seqlen {a['eval_seqlen']} "
        "--write BENCHMARKS.md"
    )
    n_windows, window = context["windows"]
    load_start, load_end = context["load"]
    section = f"""{MARK}
## Calibrated compression: GPTQ vs round-to-nearest, SparseGPT and Wanda vs magnitude

SmolLM2-135M (float weights dequantized from its Q4_1 GGUF), group `overall` (the 210 linear
layers of the blocks), {context["machine"]} with {context["threads"]} threads, torch
{context["torch"]}. The machine was shared (load average {load_start:.1f} at the start,
{load_end:.1f} at the end, on 2 cores), so the seconds are upper bounds.
Command: `{command}`

Calibration: {context["calibration"]}.
Perplexity: {n_windows * window:,} held-out tokens ({n_windows} windows of {window}), the
documents of the same seeded order that calibration never read. The 4-bit methods share one
grid (symmetric, group size {GROUP_SIZE}, torchao's scales); their sparsity counts the weights
whose integer is 0. Magnitude pruning is per layer, as SparseGPT's and Wanda's levels are.

| method | recipe | sparsity | perplexity | compress s |
|---|---|---|---|---|
{table}

{verdicts}

GPTQ takes back {100 * (rtn - gptq) / (rtn - base):.0f}% of round-to-nearest's perplexity
increase on this grid; magnitude pruning's perplexity at 50% is {magnitude / sparsegpt:.1f}x
SparseGPT's.
{MARK}"""
    return section, all(ok for _, _, ok in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--write", type=Path, help="Update this Markdown file's section.")
    args = parser.parse_args()

    from knowcomp.compress import CompressionSession, parse_recipe
    from knowcomp.compress.calibration import CalibrationSpec, heldout_documents
    from knowcomp.models import load_model

    load_start = os.getloadavg()[0]
    loaded = load_model("smollm2-135m")
    spec = CalibrationSpec(nsamples=args.nsamples, seqlen=args.seqlen, seed=0)
    session = CompressionSession(loaded, calibration=spec)
    calibration = session.calibration(0)
    windows = heldout_windows(
        loaded.tokenizer, heldout_documents(calibration), args.eval_tokens, args.eval_seqlen
    )
    rows = []
    for label, recipe in RECIPES:
        start = time.perf_counter()
        report = session.apply(parse_recipe(recipe)) if recipe else None
        seconds = time.perf_counter() - start
        ppl = perplexity(loaded.model, windows)
        session.restore()
        row = {
            "method": label,
            "recipe": recipe or "-",
            "sparsity": report.groups[0].sparsity if report else 0.0,
            "perplexity": ppl,
            "compress_seconds": seconds if recipe else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    context = {
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load": [load_start, os.getloadavg()[0]],
        "calibration": calibration.describe(),
        "windows": list(windows.shape),
        "args": vars(args) | {"write": str(args.write) if args.write else None},
    }
    print(json.dumps(context), flush=True)
    section, ok = render(rows, context)
    if args.write:
        from bench_global_prune import write_section

        write_section(args.write, section)
    print(section)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
