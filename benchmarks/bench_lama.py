"""LAMA T-REx scoring: knowcomp's engine against a naive reference written the way the first
study's scripts did it, in one run, with identical predictions required.

Reference: every sequence padded to 128 tokens, fixed batches in data order, the full
vocabulary head applied at every position, then the slot's row read out.
knowcomp: length-sorted batches padded to their own longest sequence, the head applied only at
the slot (`knowcomp.probes.engine`).

Models: SmolLM2-135M (decoder, next-token cloze) and a BERT-base-sized random masked LM
(12 layers, hidden 768, MiniLM's 30,522-token vocabulary).

    python benchmarks/bench_lama.py --limit 10 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from knowcomp.models import load_model
from knowcomp.models.family import Family
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import engine
from knowcomp.probes.lama import items as lama_items
from knowcomp.probes.lama.cloze import ClozeBuilder
from knowcomp.probes.sampling import take

MARK = "<!-- bench_lama -->"
PAD_TO = 128
REFERENCE_BATCH = 32


def bert_base_random() -> LoadedModel:
    minilm = load_model("minilm-l6")  # its tokenizer (30,522 tokens)
    config = AutoConfig.for_model("bert", vocab_size=len(minilm.tokenizer))
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config).eval()
    return LoadedModel(model, minilm.tokenizer, Family.ENCODER, "bert-base (random)", "config")


def requests_for(loaded: LoadedModel, limit: int, data_dir: Path | None) -> list[engine.Request]:
    builder = ClozeBuilder(loaded.tokenizer, loaded.family, loaded.name)
    relations = lama_items.trex(data_dir, False)
    out = []
    for relation in sorted(relations):
        for item in take(relations[relation], limit, 0):
            built = builder.build(item)
            if isinstance(built, engine.Request):
                out.append(built)
    return out


def reference(loaded: LoadedModel, requests: list[engine.Request], pad_id: int) -> list[tuple]:
    """The study's way: pad to 128, full head everywhere, read the slot's row."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(requests), REFERENCE_BATCH):
            batch = requests[start : start + REFERENCE_BATCH]
            ids = torch.full((len(batch), PAD_TO), pad_id)
            mask = torch.zeros((len(batch), PAD_TO), dtype=torch.long)
            for row, r in enumerate(batch):
                ids[row, : len(r.input_ids)] = torch.tensor(r.input_ids)
                mask[row, : len(r.input_ids)] = 1
            logits = loaded.model(input_ids=ids, attention_mask=mask).logits
            for row, r in enumerate(batch):
                scores = logits[row, r.positions[0]]
                target = r.targets[0]
                out.append((int(scores.argmax()), int((scores > scores[target]).sum()) + 1))
    return out


def ours(loaded: LoadedModel, requests: list[engine.Request], pad_id: int) -> list[tuple]:
    scored = engine.score(loaded.model, loaded.family, requests, pad_id=pad_id)
    return [(s.first_top, s.first_rank) for s in scored]


def compare(loaded: LoadedModel, limit: int, data_dir: Path | None) -> dict:
    requests = requests_for(loaded, limit, data_dir)
    pad = loaded.tokenizer.pad_token_id or 0
    timings, answers = {}, {}
    for name, fn in (("reference", reference), ("knowcomp", ours)):
        start = time.perf_counter()
        answers[name] = fn(loaded, requests, pad)
        timings[name] = time.perf_counter() - start
    top_equal = sum(a[0] == b[0] for a, b in zip(answers["reference"], answers["knowcomp"],
                                                  strict=True))  # fmt: skip
    rank_equal = sum(a == b for a, b in zip(answers["reference"], answers["knowcomp"], strict=True))
    return {"model": loaded.spec, "facts": len(requests), **timings,
            "top1_equal": top_equal, "both_equal": rank_equal}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10, help="facts per relation")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    rows = [compare(m, args.limit, args.data_dir) for m in (load_model("smollm2-135m"),
                                                            bert_base_random())]  # fmt: skip
    for r in rows:
        assert r["top1_equal"] == r["facts"], r
    table = "\n".join(
        f"| {r['model']} | {r['facts']} | {r['reference']:.1f} | {r['knowcomp']:.1f} | "
        f"{r['reference'] / r['knowcomp']:.1f}x | {r['top1_equal']}/{r['facts']} | "
        f"{r['both_equal']}/{r['facts']} |"
        for r in rows
    )
    section = f"""{MARK}
## LAMA T-REx scoring: engine vs the study's way (pad to 128, full head everywhere)

{args.limit} facts per relation (seed 0), single-token objects only; {platform.machine()},
{torch.get_num_threads()} threads, torch {torch.__version__}, float32.
Command: `python benchmarks/bench_lama.py --limit {args.limit} --write BENCHMARKS.md`

| model | facts | reference (s) | knowcomp (s) | speed-up | same top-1 | same top-1 and rank |
|---|---|---|---|---|---|---|
{table}

The reference pads every sequence to 128 tokens and applies the vocabulary head at all of them;
knowcomp pads each length-sorted batch to its longest sequence and applies the head only at the
slot. Where a rank differs, it is by floating-point rounding between the two batch shapes.
{MARK}"""
    if args.write:
        from bench_global_prune import write_section

        write_section(args.write, section, MARK)
    print(section)


if __name__ == "__main__":
    main()
