"""Padded tokens per batch on the CPU: the probes' time at several budgets, same items, one run.

Two models, each scored at every budget in `--budgets`, in alternating rounds (`--rounds`; each
budget's best round kept, so that a load change on a shared machine hits every budget alike):

- a decoder, SmolLM2-135M (float32), on PIQA and ARC-Easy (`--items` each): the engine's
  packed and padded scoring (`CPU_BATCH_TOKENS["score"]`);
- an encoder-decoder, a random T5 of Flan-T5-small's shape (as in `bench_seq2seq.py`; no
  published weights can be downloaded here) with a T5 tokenizer trained on the scored texts, on
  BoolQ, PIQA and HellaSwag (`--items` each): each context encoded once for all its choices
  (`CPU_BATCH_TOKENS["seq2seq"]`).

Every budget must give the same picks. Run from the repository root:

    python benchmarks/bench_batch_tokens.py --items 40 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.seq2seq_tokenizers

from tests.seq2seq_tokenizers import t5_tokenizer, tiny_seq2seq

from knowcomp.models import load_model
from knowcomp.probes.base import RunOptions
from knowcomp.probes.batching import CPU_BATCH_TOKENS
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take

MARK = "<!-- bench_batch_tokens -->"
FLAN_T5_SMALL = dict(
    d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, d_kv=64,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False,
)  # fmt: skip
SETUPS = {"decoder": ("piqa", "arc-easy"), "seq2seq": ("boolq", "piqa", "hellaswag")}


def seq2seq_model(items: int):
    chosen = [take(get_probe(p).items(RunOptions())[0], items, 0) for p in SETUPS["seq2seq"]]
    texts = [c + x for task in chosen for item in task for c, x in item.pairs]
    tokenizer = t5_tokenizer(texts, vocab_size=2000)
    tokenizer.model_max_length = 512
    return tiny_seq2seq("t5", tokenizer, **FLAN_T5_SMALL)


def one_pass(loaded, probes, items: int, budget: int) -> tuple[float, float, list]:
    """Wall and CPU seconds (this process, all threads) for every probe at `budget`, and the
    picks. CPU time is what a loaded machine disturbs least: other jobs delay this one's
    threads, but do not make its work larger."""
    wall, cpu = time.perf_counter(), time.process_time()
    picks = []
    for probe in probes:
        result = get_probe(probe).run(loaded, RunOptions(limit=items, seed=0, max_tokens=budget))
        picks += [(r["chosen"], r["chosen_norm"]) for r in result.records]
    return time.perf_counter() - wall, time.process_time() - cpu, picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="items per task")
    parser.add_argument("--budgets", default="256,512,1024,2048,4096,8192")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=tuple(SETUPS), help="one of the two models")
    parser.add_argument("--write", type=Path, help="Update this Markdown file's section.")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    rows = []
    for kind, probes in SETUPS.items():
        if args.only and kind != args.only:
            continue
        loaded = load_model("smollm2-135m") if kind == "decoder" else seq2seq_model(args.items)
        best: dict[int, float] = {}
        best_cpu: dict[int, float] = {}
        picks: dict[int, list] = {}
        load = 0.0
        for round_ in range(args.rounds):
            order = budgets if round_ % 2 == 0 else budgets[::-1]
            for budget in order:
                seconds, cpu, picks[budget] = one_pass(loaded, probes, args.items, budget)
                best[budget] = min(best.get(budget, seconds), seconds)
                best_cpu[budget] = min(best_cpu.get(budget, cpu), cpu)
                load = max(load, os.getloadavg()[0])
                print(kind, budget, f"{seconds:.1f}s wall, {cpu:.1f}s CPU", flush=True)
        same = all(picks[b] == picks[budgets[0]] for b in budgets)
        rows.append((kind, probes, best, best_cpu, same, load))
    section = render(rows, budgets, args)
    print(section)
    if args.write:
        from bench_global_prune import write_section

        write_section(args.write, section, MARK)


def render(rows, budgets: list[int], args) -> str:
    header = "| model | probes | default | " + " | ".join(f"{b}" for b in budgets)
    header += " | same picks |\n|---|---|---|" + "---|" * len(budgets) + "---|"
    lines = []
    for kind, probes, best, best_cpu, same, _ in rows:
        fastest = min(best_cpu.values())
        cells = [f"{best[b]:.1f} / {best_cpu[b]:.1f}" for b in budgets]
        cells = [f"**{c}**" if best_cpu[b] == fastest else c
                 for c, b in zip(cells, budgets, strict=True)]  # fmt: skip
        name = "SmolLM2-135M" if kind == "decoder" else "T5, Flan-T5-small shape (random)"
        key = "score" if kind == "decoder" else "seq2seq"
        lines.append(f"| {name} | {', '.join(probes)} | {CPU_BATCH_TOKENS[key]} | "
                     f"{' | '.join(cells)} | {'yes' if same else 'NO'} |")  # fmt: skip
    load = max(r[5] for r in rows)
    rounds = f"the best of {args.rounds} alternating rounds" if args.rounds > 1 else "one round"
    command = f"python benchmarks/bench_batch_tokens.py --items {args.items}"
    if args.budgets != "256,512,1024,2048,4096,8192":
        command += f" --budgets {args.budgets}"
    if args.rounds != 2:
        command += f" --rounds {args.rounds}"
    if args.only:
        command += f" --only {args.only}"
    return f"""{MARK}
## Padded tokens per batch on the CPU

Seconds for the probes named (`--limit {args.items} --seed 0` each, float32) at each budget of
padded tokens per batch (`--batch-tokens`), wall / CPU (the process's CPU time, all threads:
what other jobs on the machine disturb least), {rounds};
bold: the least CPU. `default` is knowcomp's CPU default for that kind of model
(`probes.batching.CPU_BATCH_TOKENS`). {os.cpu_count()} cores, {torch.get_num_threads()} torch
threads, torch {torch.__version__}; 1-minute load average {load:.1f} at the worst (other jobs
shared the machine, so single differences of ~10% are noise).
Command: `{command} --write BENCHMARKS.md`

{header}
{chr(10).join(lines)}

On a GPU the default is not measured here (no GPU was available): it is a quarter of the
free memory over an estimate of one token's activation bytes (`probes.batching`), and an
out-of-memory error halves it and retries the batch.
{MARK}"""


if __name__ == "__main__":
    main()
