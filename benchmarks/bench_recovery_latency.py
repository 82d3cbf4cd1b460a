"""Latency per forward batch with each recovery method attached, against the plain model and LoRA.

SmolLM2-135M, one token batch (default 4 x 128), every configuration timed in interleaved
rounds (each round times each configuration once, in a shuffled order), so that load from
other jobs falls on all of them alike; the median over rounds is reported. The adapters are
untrained (LoRA's B starts at zero, prompts are random): the time a forward takes does not
depend on the values. Compressed weights are not used either: the methods' extra work is the
same on any weights, and `knowcomp recover` prints the compressed model's own figures.

    python benchmarks/bench_recovery_latency.py --write BENCHMARKS.md
    python benchmarks/bench_recovery_latency.py --threads 1 --write BENCHMARKS.md  # busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def adapters(loaded, tokens: int, prompts: int) -> dict:
    """Name -> adapter (None for the plain model), untrained, with default settings."""
    from knowcomp.recovery.adapters import (
        AdapterInfo,
        IdpAdapter,
        PeftAdapter,
        peft_state,
        peft_wrapped,
    )
    from knowcomp.recovery.methods import lora_config, prefix_config, prompt_config
    from knowcomp.recovery.settings import (
        IdpSettings,
        LoraSettings,
        PrefixSettings,
        PromptSettings,
        describe_settings,
    )

    hidden = loaded.model.config.hidden_size
    scale = loaded.model.get_input_embeddings().weight.std().item()
    generator = torch.Generator().manual_seed(0)

    def info(settings, params: int) -> AdapterInfo:
        return AdapterInfo(settings.method, describe_settings(settings), params)

    def untrained(settings, config) -> PeftAdapter:
        """The adapter as peft initialises it (LoRA's B at zero), its size from its tensors."""
        with peft_wrapped(loaded.model, config) as wrapped:
            state = peft_state(wrapped)
        params = sum(v.numel() for v in state.values())
        return PeftAdapter(settings, info(settings, params), config, state)

    lora = LoraSettings()
    prompt = PromptSettings(tokens=tokens)
    prefix = PrefixSettings(tokens=tokens)
    out: dict = {"plain model": None}
    out["lora"] = untrained(lora, lora_config(loaded, lora))
    embeddings = torch.randn((tokens, hidden), generator=generator) * scale
    out["prompt"] = PeftAdapter(prompt, info(prompt, tokens * hidden), prompt_config(prompt),
                                {"prompt_embeddings": embeddings})  # fmt: skip
    out["prefix"] = untrained(prefix, prefix_config(prefix))
    equal = IdpSettings(tokens=str(tokens), prompts=prompts)
    paper = IdpSettings(tokens="50+100")
    for settings, layers in ((equal, 1), (paper, 1), (paper, 0)):
        settings = replace(settings, layers=layers)
        stack = [torch.randn((n, hidden), generator=generator) * scale for n in settings.lengths]
        name = f"idp {'+'.join(map(str, settings.lengths))}"
        name += " layers=0 (selection pass)" if layers != 1 else ""
        params = sum(settings.lengths) * hidden
        out[name] = IdpAdapter(settings, info(settings, params), stack)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--virtual", type=int, default=20, help="prompt / prefix length")
    parser.add_argument("--prompts", type=int, default=3, help="IDP's prompts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--write", type=Path, help="Update this Markdown file's section.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from knowcomp.models import load_model
    from knowcomp.recovery.latency import latency_batch

    load_start = os.getloadavg()[0]
    loaded = load_model("smollm2-135m")
    model = loaded.model
    ids = latency_batch(model.config.vocab_size, args.batch, args.tokens)
    mask = torch.ones_like(ids)
    configs = adapters(loaded, args.virtual, args.prompts)
    times: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}  # process CPU seconds
    order = list(configs)
    rng = random.Random(0)
    with torch.inference_mode():
        for round_ in range(args.rounds + 1):  # round 0 warms every configuration up
            rng.shuffle(order)
            for name in order:
                adapter = configs[name]
                context = adapter.attached(model) if adapter else _nothing()
                with context:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    model(input_ids=ids, attention_mask=mask)
                    seconds = time.perf_counter() - start
                    cpu_seconds = time.process_time() - start_cpu
                if round_:
                    times[name].append(seconds)
                    cpu[name].append(cpu_seconds)
            done = [f"{n} {1000 * times[n][-1]:.0f} ms" for n in configs if times[n]]
            print(f"round {round_}: " + ", ".join(done), flush=True)
    rows = []
    plain, lora = statistics.median(times["plain model"]), statistics.median(times["lora"])
    plain_cpu, lora_cpu = statistics.median(cpu["plain model"]), statistics.median(cpu["lora"])
    for name, adapter in configs.items():
        median, median_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        rows.append({"config": name, "ms": 1000 * median, "vs_plain": median / plain,
                     "vs_lora": median / lora, "cpu_ms": 1000 * median_cpu,
                     "cpu_vs_plain": median_cpu / plain_cpu, "cpu_vs_lora": median_cpu / lora_cpu,
                     "params": adapter.info.trainable_params if adapter else 0})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    context = {"machine": platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "load": [load_start, os.getloadavg()[0]],
               "args": vars(args) | {"write": str(args.write) if args.write else None},
               "command": "python benchmarks/bench_recovery_latency.py "
                          + " ".join(sys.argv[1:]).replace("../", "")}  # fmt: skip
    section = render(rows, context)
    if args.write:
        from bench_global_prune import write_section

        write_section(args.write, section)
    print(section)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def render(rows: list[dict], context: dict) -> str:
    a = context["args"]
    lines = [
        "<!-- bench_recovery_latency -->",
        "## Recovery: latency per forward batch, against the plain model and LoRA",
        "",
        f"SmolLM2-135M, float32, {context['machine']}, {context['threads']} torch threads, torch "
        f"{context['torch']}; one batch of {a['batch']} x {a['tokens']} tokens; prompts and "
        f"prefixes of {a['virtual']} virtual tokens; IDP with {a['prompts']} prompts of "
        f"{a['virtual']} tokens, and with the paper's two of 50 and 100 tokens. Median of "
        f"{a['rounds']} interleaved rounds (each round times every configuration once, in a "
        f"shuffled order, after a warm-up round); 1-minute load average "
        f"{context['load'][0]:.1f} at the start, {context['load'][1]:.1f} at the end.",
        f"Command: `{context['command']}`",
        "",
        "Wall-clock time, and the process's CPU time (less sensitive to other jobs on the",
        "machine than wall-clock time; read the CPU columns when the load is high).",
        "",
        "| configuration | trainable parameters | ms per batch | vs plain model | vs LoRA "
        "| CPU ms | CPU vs plain model | CPU vs LoRA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['config']} | {r['params']:,} | {r['ms']:.0f} | {r['vs_plain']:.2f}x | "
                     f"{r['vs_lora']:.2f}x | {r['cpu_ms']:.0f} | {r['cpu_vs_plain']:.2f}x | "
                     f"{r['cpu_vs_lora']:.2f}x |")  # fmt: skip
    lines += [
        "",
        "LoRA runs its low-rank updates beside every adapted layer (unmerged, as peft serves",
        "it). Prompt and prefix tuning add their virtual tokens' keys and values, computed once,",
        "to the attention of every layer. IDP (default `layers=1`) chooses its prompt inside the",
        "input's own forward: one explicit softmax over all prompts' keys in the first layer,",
        "then every layer attends over all prompt columns with the unchosen ones masked; no",
        "second forward. `layers=0` first runs a selection pass over every layer (about two",
        "forwards).",
        "<!-- bench_recovery_latency -->",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
