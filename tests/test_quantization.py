"""Quantization holds real integer weights, stays close to float, and handles tied heads."""

from __future__ import annotations

import pytest
import torch
from torch.ao.nn.quantized import dynamic as nnqd

from knowcomp.compress import CompressionSession, parse_recipe
from tests.conftest import example_input


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("model_type", ["bert", "t5", "gpt2", "llama"])
def test_dynamic_int8_holds_int8_weights_and_stays_close(tiny, model_type):
    loaded = tiny(model_type)
    batch = example_input(loaded)
    reference = loaded.model(**batch).logits
    report = CompressionSession(loaded).apply(parse_recipe("quant:dynamic_int8:overall"))
    quantized = [m for m in loaded.model.modules() if isinstance(m, nnqd.Linear)]
    assert len(quantized) == report.groups[0].layers == report.groups[0].quantized_modules
    for module in quantized:
        assert module.weight().dtype == torch.qint8
        assert module.weight().qscheme() == torch.per_tensor_affine
    assert relative_error(loaded.model(**batch).logits, reference) < 0.05
    group = report.groups[0]
    assert group.bytes_after_dense < group.bytes_before / 3


def test_per_channel_and_torchao_backends(tiny):
    loaded = tiny("llama")
    batch = example_input(loaded)
    reference = loaded.model(**batch).logits
    session = CompressionSession(loaded)
    session.apply(parse_recipe("quant:dynamic_int8:attention:granularity=per_channel"))
    q = loaded.model.model.layers[0].self_attn.q_proj
    assert q.weight().qscheme() == torch.per_channel_affine
    assert relative_error(loaded.model(**batch).logits, reference) < 0.05
    session.apply(parse_recipe("quant:dynamic_int8:attention:backend=torchao"))
    w = loaded.model.model.layers[0].self_attn.q_proj.weight
    assert w.qdata.dtype == torch.int8 and w.scale.shape == (1, 1)  # per tensor, as the study
    session.apply(
        parse_recipe("quant:dynamic_int8:attention:backend=torchao:granularity=per_channel")
    )
    w = loaded.model.model.layers[0].self_attn.q_proj.weight
    assert w.qdata.dtype == torch.int8 and w.scale.shape == (32, 1)
    assert relative_error(loaded.model(**batch).logits, reference) < 0.05


@pytest.mark.parametrize(("bits", "low", "high"), [(8, -128, 127), (4, -8, 7)])
def test_weight_only_rtn_grid(tiny, bits, low, high):
    loaded = tiny("llama")
    batch = example_input(loaded)
    reference = loaded.model(**batch).logits
    report = CompressionSession(loaded).apply(
        parse_recipe(f"quant:weight_only:feed_forward:bits={bits}:group_size=16")
    )
    w = loaded.model.model.layers[0].mlp.up_proj.weight
    assert w.qdata.dtype == torch.int8
    assert w.qdata.min() >= low and w.qdata.max() <= high
    assert w.scale.shape == (64, 32 // 16)
    assert relative_error(loaded.model(**batch).logits, reference) < (0.02 if bits == 8 else 0.2)
    # 6 layers of 64x32 weights at `bits` bits, one float32 scale and one int8 zero point
    # per group of 16 inputs
    weights, groups = 6 * 64 * 32, 6 * 64 * 2
    assert report.groups[0].bytes_after_dense == weights * bits // 8 + groups * (4 + 1)
    assert report.groups[0].bytes_before == weights * 4


def test_tied_head_is_untied_and_embeddings_stay_intact(tiny):
    loaded = tiny("llama")
    model = loaded.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    embeddings = model.model.embed_tokens.weight.detach().clone()
    session = CompressionSession(loaded)
    report = session.apply(parse_recipe("prune:l1_unstructured:final_layer:0.5"))
    assert any("untied" in note for note in report.notes)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, embeddings)
    assert (model.lm_head.weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    assert model.config.tie_word_embeddings is False
    assert "lm_head" not in session._undo.weights  # restore re-ties: no copy of its own kept
    session.restore()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config.tie_word_embeddings is True
    session.apply(parse_recipe("prune:ln_structured:final_layer:0.25"))  # again, from the start
    rows = (model.lm_head.weight == 0).all(dim=1).float().mean().item()
    assert rows == pytest.approx(0.25, abs=1e-2)
    assert (model.lm_head.weight == 0).float().mean().item() == pytest.approx(rows, abs=1e-3)
    session.restore()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, embeddings)


def test_untied_head_note_absent_when_head_is_not_tied(tiny):
    report = CompressionSession(tiny("bart")).apply(parse_recipe("quant:dynamic_int8:attention"))
    assert not any("untied" in note for note in report.notes)


def test_prune_then_quantize_keeps_zeros(tiny):
    loaded = tiny("llama")
    report = CompressionSession(loaded).apply(parse_recipe("overall-gpq"))
    by_group = {g.group: g for g in report.groups}
    assert by_group["overall"].sparsity == pytest.approx(0.2, abs=1e-3)
    assert by_group["all_linear"].quantized_modules == 15
    assert by_group["overall"].bytes_after_compressed < by_group["overall"].bytes_after_dense
