"""Encoder-decoder multiple choice: knowcomp (each context encoded once for all its choices, and
once per choice) against lm-evaluation-harness's seq2seq backend, on the same items and model.

The model is a randomly initialised T5 of Flan-T5-small's shape (8 + 8 layers, d_model 512,
gated-GELU feed-forward of 1024, 6 heads), with a T5 tokenizer trained on the scored texts
(`tests/seq2seq_tokenizers.py`; no published weights can be downloaded here) and T5's 512-token
window. Random weights cost what trained ones cost, and every pick must still be the same on
all three sides. Run from the repository root:

    python benchmarks/bench_seq2seq.py --items 40 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.seq2seq_tokenizers

from tests.seq2seq_tokenizers import t5_tokenizer, tiny_seq2seq

from knowcomp.probes import engine
from knowcomp.probes.base import RunOptions
from knowcomp.probes.lmeval_bridge import run_lm_eval, sample_picks, write_choice_task
from knowcomp.probes.mc import seq2seq
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take

MARK = "<!-- bench_seq2seq -->"
HEADER = (
    "| task | items | knowcomp (s) | one encoder pass per choice (s) | lm-eval (s) | "
    "knowcomp faster by | same picks | max \\|Δ log-lik\\| |\n|---|---|---|---|---|---|---|---|"
)
PROBES = ("boolq", "piqa", "hellaswag")
FLAN_T5_SMALL = dict(
    d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, d_kv=64,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False,
)  # fmt: skip


def per_request(loaded, items) -> list[list[float]]:
    """knowcomp's requests with one encoder pass per request (`engine.score`)."""
    start = seq2seq.decoder_start_id(loaded.model)
    pairs = [pair for item in items for pair in item.pairs]
    requests = [seq2seq.pair_request(loaded.tokenizer, c, x, 512, start) for c, x in pairs]
    scored = iter(engine.score(loaded.model, loaded.family, requests,
                               pad_id=loaded.tokenizer.pad_token_id))  # fmt: skip
    return [[next(scored).total for _ in item.pairs] for item in items]


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="items per task")
    parser.add_argument("--write", type=Path, help="Update this Markdown file's section.")
    args = parser.parse_args()
    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    chosen = {p: take(get_probe(p).items(RunOptions())[0], args.items, 0) for p in PROBES}
    texts = [c + x for items in chosen.values() for item in items for c, x in item.pairs]
    tokenizer = t5_tokenizer(texts, vocab_size=2000)
    tokenizer.model_max_length = 512
    loaded = tiny_seq2seq("t5", tokenizer, **FLAN_T5_SMALL)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for probe in PROBES:
            write_choice_task(folder, f"kc_{probe}", chosen[probe])
        for probe in PROBES:
            options = RunOptions(limit=args.items, seed=0)
            shared_s, ours = timed(get_probe(probe).run, loaded, options)
            alone_s, alone = timed(per_request, loaded, chosen[probe])
            lm_s, out = timed(run_lm_eval, loaded, [f"kc_{probe}"], batch_size=8,
                              include_path=folder, include_defaults=False,
                              bootstrap_iters=0)  # fmt: skip
            samples = sorted(out["samples"][f"kc_{probe}"], key=lambda s: s["doc_id"])
            same, worst = 0, 0.0
            for record, sample, lls in zip(ours.records, samples, alone, strict=True):
                theirs, pick, pick_norm = sample_picks(sample)
                same += (record["chosen"], record["chosen_norm"]) == (pick, pick_norm)
                for mine in (record["loglikelihoods"], lls):  # both of knowcomp's paths
                    worst = max(worst, *(abs(a - b) for a, b in zip(mine, theirs, strict=True)))
            rows.append((probe, len(samples), ours.counts["choices"], shared_s, alone_s, lm_s,
                         same, worst, os.getloadavg()[0]))  # fmt: skip
            print(rows[-1], flush=True)
    for row in rows:
        assert row[6] == row[1], f"{row[0]}: picks differ from lm-eval's"
    import lm_eval

    table = "\n".join(
        f"| {p} | {n} ({c} choices) | {s:.1f} | {a:.1f} | {lm:.1f} | {lm / s:.2f}x | "
        f"{same}/{n} | {worst:.1e} |"
        for p, n, c, s, a, lm, same, worst, _ in rows
    )
    section = f"""{MARK}
## Encoder-decoder multiple choice: knowcomp vs lm-evaluation-harness's seq2seq backend

A random T5 of Flan-T5-small's shape (8 + 8 layers, d_model 512, gated-GELU 1024, 6 heads;
float32; a T5 tokenizer of {len(tokenizer):,} pieces trained on the scored texts, 512-token
window), {args.items} items per task (knowcomp's `--limit {args.items} --seed 0` subset);
{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__},
lm-eval {lm_eval.__version__}; 1-minute load average {max(r[8] for r in rows):.1f} at the
worst (other jobs shared the machine). Columns: knowcomp's probe (each distinct context
encoded once for all its choices), knowcomp's requests with one encoder pass per choice
(`engine.score`), and lm-eval's `HFLM(backend="seq2seq")` at batch size 8 on the same model
object, over the same contexts and choices (`write_choice_task`); whole calls, one run each.
Command: `python benchmarks/bench_seq2seq.py --items {args.items} --write BENCHMARKS.md`

{HEADER}
{table}

Every `acc` and `acc_norm` pick is lm-eval's. BoolQ's two answers and HellaSwag's four endings
share one context each, which knowcomp encodes once; PIQA's two solutions share a short goal,
and its long solutions go through the decoder either way.
{MARK}"""
    print(section)
    if args.write:
        from bench_global_prune import write_section

        write_section(args.write, section, MARK)


if __name__ == "__main__":
    main()
