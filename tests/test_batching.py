"""Batch budgets per device, and the out-of-memory back-off, with a simulated out-of-memory
error (`torch.cuda.OutOfMemoryError` raised on the CPU by a hook above a token count): every
loop gives the scores of an unsplit run, tells its progress once, and remembers the budget."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.errors import KnowcompError
from knowcomp.probes import engine, generate, packed
from knowcomp.probes.base import RunOptions, run_probe
from knowcomp.probes.batching import (
    ACCELERATOR_BATCH_TOKENS,
    CPU_BATCH_TOKENS,
    MAX_ACCELERATOR_BATCH_TOKENS,
    MIN_ACCELERATOR_BATCH_TOKENS,
    OutOfMemory,
    budget_for,
    bytes_per_token,
    default_batch_tokens,
    describe_budgets,
    is_out_of_memory,
    scaled_budget,
    take_record,
)
from knowcomp.probes.engine import Request
from knowcomp.probes.mc import seq2seq
from knowcomp.probes.registry import get_probe
from tests.conftest import build_tiny
from tests.test_lama import SHARED_DATA

CPU = torch.device("cpu")


@contextmanager
def out_of_memory_above(module: torch.nn.Module, tokens: int):
    """`module` raises CUDA's out-of-memory error when a forward's token ids (input_ids, else
    decoder_input_ids) hold more than `tokens` ids; yields the sizes it was called with."""
    sizes: list[int] = []

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        ids = ids if ids is not None else kwargs.get("decoder_input_ids")
        sizes.append(ids.numel())
        if ids.numel() > tokens:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {ids.numel()} tokens\nmore detail"
            )

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


def _requests(count: int = 12, seed: int = 0) -> list[Request]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        length = int(torch.randint(4, 14, (1,), generator=generator))
        ids = tuple(torch.randint(3, 100, (length,), generator=generator).tolist())
        out.append(Request(ids[:-2], (length - 4, length - 3), ids[-2:]))
    return out


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.greedy, x.first_rank, x.first_top) == (y.greedy, y.first_rank, y.first_top)
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)


def test_scoring_backs_off_to_the_unsplit_scores_and_remembers_the_budget():
    model = build_tiny("llama").model
    requests = _requests()
    unsplit = engine.score(model, build_tiny("llama").family, requests, pad_id=0, max_tokens=4096)
    take_record(model)
    told: list[int] = []
    with out_of_memory_above(model, 40) as sizes:
        split = engine.score(model, build_tiny("llama").family, requests, pad_id=0,
                             max_tokens=4096, progress=told.append)  # fmt: skip
    _same(unsplit, split)
    assert max(sizes) > 40  # it did run out of memory, and backed off
    assert sum(told) == len(requests)  # progress told once per request, retries or not
    record = take_record(model)
    assert record.started == 4096 and record.lowered_to is not None and record.lowered_to <= 40
    assert record.backoffs and "CUDA out of memory" in record.backoffs[0]
    assert "\n" not in record.backoffs[0]
    assert budget_for(model, 4096) == record.lowered_to  # later loops start from it


def test_one_sequence_that_does_not_fit_is_one_line():
    loaded = build_tiny("llama")
    with out_of_memory_above(loaded.model, 5), pytest.raises(OutOfMemory) as err:
        engine.score(loaded.model, loaded.family, _requests(3), pad_id=0, max_tokens=4096)
    message = str(err.value)
    assert "\n" not in message and message.startswith("out of memory on cpu with a single")
    assert "--dtype bfloat16" in message and "--device-map auto" in message


def test_other_errors_are_not_taken_for_out_of_memory():
    loaded = build_tiny("llama")

    def fail(*_args, **_kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    handle = loaded.model.register_forward_pre_hook(fail, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            engine.score(loaded.model, loaded.family, _requests(3), pad_id=0)
    finally:
        handle.remove()
    assert take_record(loaded.model).lowered_to is None


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), True),
        (torch.OutOfMemoryError("MPS backend out of memory"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"), True),
        (RuntimeError("expected scalar type Float"), False),
        (ValueError("out of memory"), False),
    ],
)  # fmt: skip
def test_what_counts_as_out_of_memory(err, expected):
    assert is_out_of_memory(err) is expected


def test_packed_scoring_backs_off():
    model = build_tiny("llama").model
    groups = [((5, 6, 7, 8), [(9, 10), (11, 12, 13), (14,)]) for _ in range(6)]
    groups += [((20, 21), [(22, 23, 24, 25)])]
    unsplit = packed.score_packed(model, groups, pad_id=0, max_length=64, max_tokens=4096)
    told: list[int] = []
    with out_of_memory_above(model, 20) as sizes:
        split = packed.score_packed(model, groups, pad_id=0, max_length=64, max_tokens=4096,
                                    progress=told.append)  # fmt: skip
    assert max(sizes) > 20 and sum(told) == sum(len(c) for _, c in groups)
    for a, b in zip(unsplit, split, strict=True):
        _same(a, b)


def test_shared_context_scoring_backs_off_in_its_continuation_batches():
    model = build_tiny("llama").model
    groups = [((5, 6, 7, 8, 9), [(10, 11, 12), (13, 14), (15,), (16, 17, 18)])] * 2
    unsplit = engine.score_shared_context(model, groups, pad_id=0, max_tokens=4096)
    with out_of_memory_above(model, 5) as sizes:
        split = engine.score_shared_context(model, groups, pad_id=0, max_tokens=4096)
    assert 6 in sizes  # three continuations of two tokens at once: split
    for a, b in zip(unsplit, split, strict=True):
        _same(a, b)


def test_encoder_decoder_shared_encoder_backs_off():
    t5 = build_tiny("t5")
    generator = torch.Generator().manual_seed(2)
    requests = []
    for c in range(5):
        context = tuple(torch.randint(3, 100, (6 + c,), generator=generator).tolist())
        for k in range(3):
            target = tuple(torch.randint(3, 100, (2 + k,), generator=generator).tolist())
            requests.append(Request(context, tuple(range(len(target))), target,
                                    (0, *target[:-1])))  # fmt: skip
    unsplit = seq2seq.score_shared_encoder(t5.model, requests, pad_id=0, max_tokens=4096)
    with out_of_memory_above(t5.model.get_encoder(), 12) as sizes:
        split = seq2seq.score_shared_encoder(t5.model, requests, pad_id=0, max_tokens=4096)
    assert max(sizes) > 12
    _same(unsplit, split)


def test_generation_backs_off_and_gives_the_same_answers():
    model = build_tiny("llama").model
    prompts = [list(range(3 + i, 9 + 2 * i)) for i in range(6)]
    rule = generate.StopRule(stops=("never",), max_new_tokens=4)
    args = dict(decode=lambda ids: " ".join(map(str, ids)), rule=rule, max_tokens=4096)
    unsplit = generate.generate(model, prompts, **args)
    told: list[int] = []
    with out_of_memory_above(model, 30) as sizes:
        split = generate.generate(model, prompts, **args, progress=told.append)
    assert max(sizes) > 30 and sum(told) == len(prompts)
    assert [g.tokens for g in split] == [g.tokens for g in unsplit]


# -- the budget per device -------------------------------------------------------------------
def test_cpu_defaults_per_kind_and_the_user_budget_wins():
    assert [default_batch_tokens(CPU, kind) for kind in ("score", "seq2seq", "generate")] == [
        CPU_BATCH_TOKENS["score"],
        CPU_BATCH_TOKENS["seq2seq"],
        CPU_BATCH_TOKENS["generate"],
    ]
    assert CPU_BATCH_TOKENS["seq2seq"] > CPU_BATCH_TOKENS["score"]
    model = build_tiny("llama").model
    assert budget_for(model, None, "seq2seq") == CPU_BATCH_TOKENS["seq2seq"]
    assert budget_for(model, 100) == 100
    assert take_record(model).started == CPU_BATCH_TOKENS["seq2seq"]  # the largest started
    with pytest.raises(ValueError, match="unknown batch kind"):
        default_batch_tokens(CPU, "train")


def test_accelerator_budgets_scale_with_free_memory_and_the_model():
    """Without a GPU: the estimate itself, and the fallback when free memory is unknown."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", hidden_size=4096, intermediate_size=11008,
                                  num_hidden_layers=32, num_attention_heads=32)  # fmt: skip
    with torch.device("meta"):
        big = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    per_token = bytes_per_token(big)
    assert per_token == (4 * 4096 + 3 * 11008) * 2
    assert bytes_per_token(big, cache=True) == per_token + 2 * 32 * 4096 * 2
    gib = 1 << 30
    assert scaled_budget(20 * gib, per_token) == 20 * gib // 4 // per_token // 512 * 512
    assert scaled_budget(20 * gib, per_token) > scaled_budget(10 * gib, per_token)
    assert scaled_budget(1 << 20, per_token) == MIN_ACCELERATOR_BATCH_TOKENS
    assert scaled_budget(1 << 50, per_token) == MAX_ACCELERATOR_BATCH_TOKENS
    if not torch.cuda.is_available():
        assert default_batch_tokens(torch.device("cuda"), "score", big) == ACCELERATOR_BATCH_TOKENS
    assert default_batch_tokens(torch.device("mps")) == ACCELERATOR_BATCH_TOKENS


# -- recorded with results ---------------------------------------------------------------------
def _choice_task(tmp_path) -> str:
    """A user multiple-choice task (`probes.mc.custom`) of six items."""
    rows = [{"q": f"Question {i}: which one?", "options": ["yes", "no", "maybe so"],
             "answer": i % 3} for i in range(6)]  # fmt: skip
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "mytask", "file": "items.jsonl", "query": "q", "choices": "options",
            "gold": "answer"}  # fmt: skip
    (tmp_path / "task.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in spec.items()))
    return str(tmp_path / "task.yaml")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.conftest import save_tiny_llama
    from tests.tokenizer_matrix import build

    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, build("gpt2"), max_position_embeddings=512)
    return folder


def test_a_probe_result_records_its_budget_and_a_back_off_note(tmp_path, model_dir):
    from knowcomp.models import load_model

    loaded = load_model(str(model_dir))
    probe = get_probe(_choice_task(tmp_path))
    plain = run_probe(probe, loaded, RunOptions(max_tokens=300))
    assert plain.options["batch_tokens"] == 300 and "batch_tokens_after_oom" not in plain.options
    with out_of_memory_above(loaded.model, 30):
        split = run_probe(probe, loaded, RunOptions(max_tokens=300))
    assert split.options["batch_tokens_after_oom"] < 300
    assert split.metrics == plain.metrics
    assert any(n.startswith("out of memory") and "unsplit run" in n for n in split.notes)
    line = describe_budgets([split.to_dict(with_records=False)], 300)
    assert line.endswith(f"-> {split.options['batch_tokens_after_oom']} after out of memory "
                         "(asked for (batch_tokens))")  # fmt: skip


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_eval_batch_tokens_is_used_and_recorded(tmp_path, model_dir):
    out = tmp_path / "out.json"
    result = CliRunner().invoke(cli, ["eval", str(model_dir), "--probes", "piqa", "--limit", "3",
                                      "--batch-tokens", "64", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["results"][0]["options"]["batch_tokens"] == 64


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_bad_batch_budget_is_one_line(tmp_path, value):
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "none"), "--probes", "piqa",
                                      "--batch-tokens", value])  # fmt: skip
    assert result.exit_code == 2 and "--batch-tokens" in result.output
    assert "Traceback" not in result.output


def test_a_spec_batch_budget_is_checked_and_changes_no_hash():
    from knowcomp.study.spec import SpecError
    from knowcomp.study.spec import spec_from_dict as parse_spec

    sweep = {"recipe": "prune:l1_unstructured:overall:{level}", "levels": [0.5]}
    base = {"name": "s", "models": ["m"], "recipes": [sweep]}
    plain, batched = parse_spec(base), parse_spec({**base, "batch_tokens": 2048})
    assert batched.batch_tokens == 2048 and plain.batch_tokens is None
    assert plain.spec_hash() == batched.spec_hash()
    for bad in (0, "4k", True, 1.5):
        with pytest.raises(SpecError, match=r"^'batch_tokens': the batch budget must be a whole"):
            parse_spec({**base, "batch_tokens": bad})


def test_errors_are_knowcomp_errors():
    assert issubclass(OutOfMemory, KnowcompError)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_a_study_stores_the_budgets_its_probes_ran_with(tmp_path, model_dir):
    from knowcomp.store import ResultsStore
    from knowcomp.study.runner import run_study
    from knowcomp.study.spec import spec_from_dict

    spec = spec_from_dict({"name": "b", "models": [str(model_dir)], "probes": ["piqa"],
                           "limit": 2, "output": str(tmp_path / "b.sqlite"), "recipes": [],
                           "batch_tokens": 64})  # fmt: skip
    run_study(spec)
    [row] = ResultsStore(spec.output, readonly=True).rows()
    assert row["versions"]["knowcomp batch tokens"] == "piqa 64 (asked for (batch_tokens))"
