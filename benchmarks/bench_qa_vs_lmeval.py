"""Open-answer generation: knowcomp's TriviaQA and WebQuestions probes against
lm-evaluation-harness's `generate_until` on the same items, prompts and in-memory model, in one
run, with identical answers and exact-match decisions required.

SmolLM2-135M: knowcomp's `take(items, N, seed)` subset of each task is written as an lm-eval
generation task (`knowcomp.probes.lmeval_bridge.write_generation_task`: a JSONL file of the
exact prompts and answers knowcomp uses, and a task YAML scored as lm-eval's `triviaqa` is), and
lm-eval's `HFLM` generates with the very model object knowcomp generates with, with
`max_gen_toks` equal to knowcomp's cap. lm-eval gets its fastest batch size among
`--batch-sizes`, measured first on the first `--pilot` items of both tasks.

    python benchmarks/bench_qa_vs_lmeval.py --items 100 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench_mc_vs_lmeval import cpu_name
from knowcomp.models import load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.generate import DEFAULT_MAX_BATCH
from knowcomp.probes.lmeval_bridge import run_lm_eval, write_generation_task
from knowcomp.probes.qa.probes import TRIVIAQA_STOPS
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take

MARK = "<!-- bench_qa_vs_lmeval -->"
PROBES = ("triviaqa", "webqs")


def task_name(probe: str) -> str:
    return "kc_" + probe


def lm_eval_run(loaded: LoadedModel, tasks: list[str], manager: Any, batch_size: int,
                limit: int | None = None) -> tuple[float, dict]:  # fmt: skip
    """Seconds and result of one lm-eval run (task building, tokenization, generation,
    filters, metrics)."""
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


def compare(loaded: LoadedModel, probe: str, args, manager: Any, batch_size: int) -> dict:
    """Run both on one task `args.repeats` times, alternating, and keep each side's best time
    (the machine may be shared); answers and decisions compared item by item."""
    ours_s, theirs_s, loads = [], [], []
    options = RunOptions(limit=args.items, seed=args.seed, data_dir=args.data_dir,
                         max_new_tokens=args.max_new_tokens)  # fmt: skip
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = get_probe(probe).run(loaded, options)
        ours_s.append(time.perf_counter() - start)
        seconds, out = lm_eval_run(loaded, [task_name(probe)], manager, batch_size)
        theirs_s.append(seconds)
        loads.append(os.getloadavg()[0])
        print(f"{probe}: knowcomp {ours_s[-1]:.1f} s, lm-eval {seconds:.1f} s "
              f"(load average {loads[-1]:.2f})", flush=True)  # fmt: skip
    samples = sorted(out["samples"][task_name(probe)], key=lambda s: s["doc_id"])
    same_answer = same_decision = 0
    for record, sample in zip(ours.records, samples, strict=True):
        (answer,) = sample["filtered_resps"]
        same_answer += record["prediction"] == answer
        same_decision += float(record["matched"]) == sample["exact_match"]
    result = out["results"][task_name(probe)]
    return {"probe": probe, "items": len(samples), "knowcomp": min(ours_s),
            "lm_eval": min(theirs_s), "runs": (ours_s, theirs_s), "load": max(loads),
            "same_answer": same_answer, "same_decision": same_decision,
            "em": ours.metrics["exact_match"], "capped": ours.metrics["capped"],
            "lm_eval_em": result["exact_match,remove_whitespace"],
            "tokens": sum(r["tokens"] for r in ours.records)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100, help="questions per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="the cap, both sides")
    parser.add_argument("--pilot", type=int, default=16, help="items per task to pick lm-eval's "
                        "batch size on")  # fmt: skip
    parser.add_argument("--batch-sizes", default="8,32", help="lm-eval batch sizes to try")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side; best kept")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--write", type=Path, help="Update this Markdown file's section.")
    args = parser.parse_args()
    logging.getLogger("lm-eval").setLevel(logging.ERROR)  # per-task notices, not results
    from lm_eval.tasks import TaskManager

    loaded = load_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as folder:
        for probe in PROBES:
            items, _ = get_probe(probe).items(RunOptions(data_dir=args.data_dir))
            questions = [(i.prompt, i.answers) for i in take(items, args.items, args.seed)]
            write_generation_task(folder, task_name(probe), questions, until=TRIVIAQA_STOPS,
                                  max_gen_toks=args.max_new_tokens)  # fmt: skip
        manager = TaskManager(include_path=folder, include_defaults=False)
        pilot = pick_batch_size(loaded, manager, [int(b) for b in args.batch_sizes.split(",")],
                                args.pilot)  # fmt: skip
        best = min(pilot, key=pilot.__getitem__)
        print("lm-eval pilot seconds by batch size:", pilot, "-> batch size", best)
        rows = [compare(loaded, probe, args, manager, best) for probe in PROBES]
    for r in rows:
        print(r)
        assert r["same_answer"] == r["same_decision"] == r["items"], r
    total = {k: sum(r[k] for r in rows) for k in ("items", "knowcomp", "lm_eval")}
    table = "\n".join(
        f"| {r['probe']} | {r['items']} | {r['knowcomp']:.1f} | {r['lm_eval']:.1f} | "
        f"{r['lm_eval'] / r['knowcomp']:.2f}x | {r['same_answer']}/{r['items']} | "
        f"{r['same_decision']}/{r['items']} | {r['em']:.3f} | {r['capped']:.3f} |"
        for r in rows
    )
    pilot_text = ", ".join(f"{bs}: {s:.1f} s" for bs, s in pilot.items())
    runs = "; ".join(
        f"{r['probe']}: knowcomp {' / '.join(f'{x:.1f}' for x in r['runs'][0])} s, lm-eval "
        f"{' / '.join(f'{x:.1f}' for x in r['runs'][1])} s"
        for r in rows
    )
    ratio = total["lm_eval"] / total["knowcomp"]
    tokens = sum(r["tokens"] for r in rows)
    import lm_eval

    section = f"""{MARK}
## Open-answer generation: knowcomp's QA probes vs lm-evaluation-harness on the same items

SmolLM2-135M, float32; {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch
threads, torch {torch.__version__}, lm-eval {lm_eval.__version__}. {args.items} questions per
task (knowcomp's `--limit {args.items} --seed {args.seed}` subset), zero-shot, lm-eval's
prompts (`Question: ...?\\nAnswer:` for TriviaQA, `Question: ...\\nAnswer:` for WebQuestions),
greedy, stopping at a newline, period or comma or the end-of-text token, at most
{args.max_new_tokens} new tokens on both sides. lm-eval reads the very prompts and answers
knowcomp uses, from a JSONL file and a `generate_until` task YAML scored as its `triviaqa` task
(`knowcomp.probes.lmeval_bridge.write_generation_task`), and generates with the same in-memory
model object through `HFLM` (`model.generate`). Its batch size is the fastest of
{args.batch_sizes} on the first {args.pilot} items of both tasks ({pilot_text}): **{best}**;
knowcomp's is its default ({DEFAULT_MAX_BATCH} prompts). Times are whole calls (reading items,
tokenizing, generating, scoring), each side's best of {args.repeats} runs alternating with the
other side's, in one process ({runs}; highest 1-minute load average
{max(r["load"] for r in rows):.1f} on a machine that other jobs share, so the times are noisy).
Command: `python benchmarks/bench_qa_vs_lmeval.py --items {args.items} --write BENCHMARKS.md`

| task | questions | knowcomp (s) | lm-eval (s) | knowcomp faster by | same answer | same decision | exact match | capped |
|---|---|---|---|---|---|---|---|---|
{table}
| **both** | {total["items"]} | {total["knowcomp"]:.1f} | {total["lm_eval"]:.1f} | **{ratio:.2f}x** | | | | |

Every answer and every exact-match decision is the same on both sides. knowcomp generated
{tokens} tokens for the {total["items"]} questions (SmolLM2-135M-Instruct mostly answers with
its end-of-text token at once). Both read each prompt once and then feed one token per step on
the key/value cache. The difference is in when a sequence stops costing: lm-eval's stop rule is
one criterion per stop string, and a batch only stops when every row has produced *the same*
stop string (or the end-of-text token), so a row that ended with a period keeps generating,
padded, until the cap or until the others are done; knowcomp takes every finished sequence out
of the batch and out of its cache after each step.
{MARK}"""  # noqa: E501
    if args.write:
        from bench_global_prune import write_section

        write_section(args.write, section, MARK)
    print(section)


if __name__ == "__main__":
    main()
