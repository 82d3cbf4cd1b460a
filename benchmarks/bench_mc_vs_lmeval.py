"""Multiple-choice scoring: knowcomp's probes against lm-evaluation-harness itself, on the same
items, prompts and in-memory model, in one run, with identical picks required.

PIQA and ARC-Easy on SmolLM2-135M: knowcomp's `take(items, N, seed)` subset of each is written
as an lm-eval task (`knowcomp.probes.lmeval_bridge.write_choice_task`: a JSONL file of the exact
contexts and choices knowcomp scores, and a `multiple_choice` task YAML over it), and lm-eval's
`HFLM` scores the very model object knowcomp scores. lm-eval gets its fastest batch size among
`--batch-sizes`, measured first on the first `--pilot` items of both tasks. Every item must get
the same `acc` and `acc_norm` picks from both.

    python benchmarks/bench_mc_vs_lmeval.py --items 200 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from knowcomp.models import load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.lmeval_bridge import run_lm_eval, sample_picks, write_choice_task
from knowcomp.probes.mc.requests import model_max_length, pair_request
from knowcomp.probes.packed import supports_packing
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take

MARK = "<!-- bench_mc_vs_lmeval -->"
PROBES = ("piqa", "arc-easy")


def cpu_name() -> str:
    """The processor's model name where Linux states it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def task_name(probe: str) -> str:
    return "kc_" + probe.replace("-", "_")


def lm_eval_run(loaded: LoadedModel, tasks: list[str], manager: Any, batch_size: int,
                limit: int | None = None) -> tuple[float, dict]:  # fmt: skip
    """Seconds and result of one lm-eval run (task building, tokenization, scoring, metrics)."""
    start = time.perf_counter()
    out = run_lm_eval(loaded, tasks, limit=limit, batch_size=batch_size, task_manager=manager,
                      log_samples=True, bootstrap_iters=0)  # fmt: skip
    return time.perf_counter() - start, out


def pick_batch_size(
    loaded: LoadedModel, manager: Any, sizes: list[int], pilot: int
) -> dict[int, float]:
    """lm-eval's seconds on the first `pilot` items of every task, per batch size."""
    tasks = [task_name(p) for p in PROBES]
    lm_eval_run(loaded, tasks, manager, sizes[0], limit=2)  # warm-up: datasets cache, kernels
    return {bs: lm_eval_run(loaded, tasks, manager, bs, limit=pilot)[0] for bs in sizes}


def token_counts(loaded: LoadedModel, items: list) -> tuple[int, int]:
    """Input tokens with one sequence per (context, choice), as lm-eval runs them, and with
    each context packed once before all its choices' tokens, as knowcomp runs them."""
    limit = model_max_length(loaded)
    requests = {pair_request(loaded.tokenizer, c, x, limit) for it in items for c, x in it.pairs}
    contexts = {r.input_ids[: r.positions[0] + 1] for r in requests}
    plain = sum(len(r.input_ids) for r in requests)
    return plain, sum(map(len, contexts)) + sum(len(r.targets) - 1 for r in requests)


def compare(loaded: LoadedModel, probe: str, args, manager: Any, batch_size: int) -> dict:
    """Run both on one task `args.repeats` times, alternating, and keep each side's best time
    (the machine may be shared); picks and log-likelihoods compared item by item."""
    ours_s, theirs_s, loads = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = get_probe(probe).run(loaded, RunOptions(limit=args.items, seed=args.seed,
                                                       data_dir=args.data_dir))  # fmt: skip
        ours_s.append(time.perf_counter() - start)
        seconds, out = lm_eval_run(loaded, [task_name(probe)], manager, batch_size)
        theirs_s.append(seconds)
        loads.append(os.getloadavg()[0])
        print(f"{probe}: knowcomp {ours_s[-1]:.1f} s, lm-eval {seconds:.1f} s "
              f"(load average {loads[-1]:.2f})", flush=True)  # fmt: skip
    samples = sorted(out["samples"][task_name(probe)], key=lambda s: s["doc_id"])
    same = same_norm = 0
    worst = 0.0
    for record, sample in zip(ours.records, samples, strict=True):
        lls, pick, pick_norm = sample_picks(sample)
        same += record["chosen"] == pick
        same_norm += record["chosen_norm"] == pick_norm
        worst = max(worst, *(abs(a - b) for a, b in zip(record["loglikelihoods"], lls,
                                                         strict=True)))  # fmt: skip
    return {"probe": probe, "items": len(samples), "choices": ours.counts["choices"],
            "knowcomp": min(ours_s), "lm_eval": min(theirs_s), "runs": (ours_s, theirs_s),
            "load": max(loads), "same": same,
            "same_norm": same_norm, "max_diff": worst, "acc": ours.metrics["acc"],
            "lm_eval_acc": out["results"][task_name(probe)]["acc,none"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="items per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pilot", type=int, default=16, help="items per task to pick lm-eval's "
                        "batch size on")  # fmt: skip
    parser.add_argument("--batch-sizes", default="1,8,32", help="lm-eval batch sizes to try")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side; best kept")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--write", type=Path, help="Update this Markdown file's section.")
    args = parser.parse_args()
    logging.getLogger("lm-eval").setLevel(logging.ERROR)  # per-task notices, not results
    from lm_eval.tasks import TaskManager

    loaded = load_model("smollm2-135m")
    assert supports_packing(loaded.model, loaded.family), "SmolLM2 should be scored packed"
    tokens = {}
    with tempfile.TemporaryDirectory() as folder:
        for probe in PROBES:
            items, _ = get_probe(probe).items(RunOptions(data_dir=args.data_dir))
            chosen = take(items, args.items, args.seed)
            write_choice_task(folder, task_name(probe), chosen)
            tokens[probe] = token_counts(loaded, chosen)
        manager = TaskManager(include_path=folder, include_defaults=False)
        pilot = pick_batch_size(loaded, manager, [int(b) for b in args.batch_sizes.split(",")],
                                args.pilot)  # fmt: skip
        best = min(pilot, key=pilot.__getitem__)
        print("lm-eval pilot seconds by batch size:", pilot, "-> batch size", best)
        rows = [compare(loaded, probe, args, manager, best) for probe in PROBES]
    for r in rows:
        print(r)
        assert r["same"] == r["same_norm"] == r["items"], r
    total = {k: sum(r[k] for r in rows) for k in ("items", "knowcomp", "lm_eval")}
    table = "\n".join(
        f"| {r['probe']} | {r['items']} ({r['choices']} choices) | {r['knowcomp']:.1f} | "
        f"{r['lm_eval']:.1f} | {r['lm_eval'] / r['knowcomp']:.2f}x | {r['same']}/{r['items']} | "
        f"{r['same_norm']}/{r['items']} | {r['max_diff']:.1e} | {r['acc']:.3f} |"
        for r in rows
    )
    pilot_text = ", ".join(f"{bs}: {s:.1f} s" for bs, s in pilot.items())
    token_text = " and ".join(
        f"{plain:,} to {packed:,} on {probe} ({1 - packed / plain:.0%} fewer)"
        for probe, (plain, packed) in tokens.items()
    )
    runs = "; ".join(
        f"{r['probe']}: knowcomp {' / '.join(f'{x:.1f}' for x in r['runs'][0])} s, lm-eval "
        f"{' / '.join(f'{x:.1f}' for x in r['runs'][1])} s"
        for r in rows
    )
    ratio = total["lm_eval"] / total["knowcomp"]
    head = loaded.model.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in loaded.model.parameters()) - (
        loaded.model.get_input_embeddings().weight.numel()
    )  # tied: the head's tensor is counted once, as the embeddings
    head_share = head / (body + head)
    import lm_eval

    section = f"""{MARK}
## Multiple choice: knowcomp's probes vs lm-evaluation-harness on the same items

SmolLM2-135M, float32; {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch
threads, torch {torch.__version__}, lm-eval {lm_eval.__version__}. {args.items} items per task
(knowcomp's `--limit {args.items} --seed {args.seed}` subset), zero-shot, lm-eval's prompts
(`Question: ...\\nAnswer:` + ` choice`). lm-eval reads the very contexts and choices knowcomp
scores, from a JSONL file and a `multiple_choice` task YAML
(`knowcomp.probes.lmeval_bridge.write_choice_task`), and scores the same in-memory model object
through `HFLM`. Its batch size is the fastest of {args.batch_sizes} on the first {args.pilot}
items of both tasks ({pilot_text}): **{best}**. Times are whole calls (reading items,
tokenizing, scoring, metrics), each side's best of {args.repeats} runs alternating with the
other side's, in one process ({runs}; highest 1-minute load average
{max(r["load"] for r in rows):.1f} on a machine that other jobs may share).
Command: `python benchmarks/bench_mc_vs_lmeval.py --items {args.items} --write BENCHMARKS.md`

| task | items | knowcomp (s) | lm-eval (s) | knowcomp faster by | same acc pick | same acc_norm pick | max \\|Δ log-lik\\| | acc |
|---|---|---|---|---|---|---|---|---|
{table}
| **both** | {total["items"]} | {total["knowcomp"]:.1f} | {total["lm_eval"]:.1f} | **{ratio:.2f}x** | | | | |

Every pick is the same on both sides, and the log-likelihoods differ only by float rounding
between batch shapes. Over both tasks knowcomp is {ratio:.2f}x faster:
{"it meets" if ratio >= 1.5 else "short of"} the 1.5x goal. Both sort by length and pad each
batch only to its longest sequence. lm-eval runs one sequence per (question, choice), so a
question is computed once per choice, and applies the vocabulary head ({head:,} weights,
{head_share:.0%} of the weights each token passes through) and a log-softmax at every position.
knowcomp packs each question and all its choices into one sequence: a 4-D attention mask keeps
every choice from seeing the others, and position ids start each choice right after the
question, so each choice is computed as if it followed the question alone
(`knowcomp.probes.packed`). That cuts the input tokens from {token_text}. Rows are batched up to
a token budget (512 padded tokens on CPU), and the head runs only at the positions that predict
a choice's tokens, once at the question's last token for all its choices.
{MARK}"""  # noqa: E501
    if args.write:
        from bench_global_prune import write_section

        write_section(args.write, section, MARK)
    print(section)


if __name__ == "__main__":
    main()
