"""Module groups: exact membership for BERT, T5 and Llama, counts by hand, generic rules."""

from __future__ import annotations

import pytest

from knowcomp.errors import GroupError
from knowcomp.modules.groups import GROUPS, classify_linear_layers, resolve_group
from knowcomp.modules.table import group_rows, summarize_names, total_trainable
from tests.conftest import TINY_CONFIGS


def names(loaded, group: str) -> list[str]:
    layers = classify_linear_layers(loaded.model, loaded.family)
    return [layer.name for layer in resolve_group(layers, group)]


def test_bert_groups_exact(tiny):
    bert = tiny("bert")
    att = [f"bert.encoder.layer.{i}.attention.{p}" for i in range(2)
           for p in ("self.query", "self.key", "self.value", "output.dense")]  # fmt: skip
    ff = [f"bert.encoder.layer.{i}.{p}" for i in range(2)
          for p in ("intermediate.dense", "output.dense")]  # fmt: skip
    assert names(bert, "attention") == att
    assert names(bert, "encoder_attention") == att
    assert names(bert, "self_attention") == att
    assert names(bert, "attention_qkv") == [n for n in att if not n.endswith("output.dense")]
    assert names(bert, "feed_forward") == ff
    assert names(bert, "final_layer") == ["cls.predictions.decoder"]
    assert names(bert, "other") == ["cls.predictions.transform.dense"]
    assert set(names(bert, "overall")) == set(att + ff + ["cls.predictions.transform.dense"])
    with pytest.raises(GroupError, match="cross_attention' is empty"):
        names(bert, "cross_attention")


def test_t5_groups_exact(tiny):
    t5 = tiny("t5")
    qkvo = ("q", "k", "v", "o")
    enc = [f"encoder.block.{i}.layer.0.SelfAttention.{p}" for i in range(2) for p in qkvo]
    dec_self = [f"decoder.block.{i}.layer.0.SelfAttention.{p}" for i in range(2) for p in qkvo]
    cross = [f"decoder.block.{i}.layer.1.EncDecAttention.{p}" for i in range(2) for p in qkvo]
    assert names(t5, "encoder_attention") == enc
    assert names(t5, "cross_attention") == cross
    assert names(t5, "self_attention") == enc + dec_self
    assert set(names(t5, "decoder_attention")) == set(dec_self + cross)
    assert set(names(t5, "attention")) == set(enc + dec_self + cross)
    ff = [f"encoder.block.{i}.layer.1.DenseReluDense.{p}" for i in range(2) for p in ("wi", "wo")]
    ff += [f"decoder.block.{i}.layer.2.DenseReluDense.{p}" for i in range(2) for p in ("wi", "wo")]
    assert names(t5, "feed_forward") == ff
    assert names(t5, "final_layer") == ["lm_head"]


def test_llama_groups_exact_and_counts_by_hand(tiny):
    llama = tiny("llama")
    att = [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo"]
    ff = [f"model.layers.{i}.mlp.{p}_proj" for i in range(2) for p in ("gate", "up", "down")]
    assert names(llama, "attention") == att
    assert names(llama, "decoder_attention") == att
    assert names(llama, "feed_forward") == ff
    assert names(llama, "final_layer") == ["lm_head"]
    assert sorted(names(llama, "overall")) == sorted(att + ff)
    h, kv, i, v, n = 32, 16, 64, 120, 2  # hidden, kv width (1 head of 16), ffn, vocab, layers
    attention = n * (h * h + h * kv + h * kv + h * h)
    feed_forward = n * 3 * h * i
    final = v * h
    rows = {r.group: r for r in group_rows(llama.model, classify_linear_layers(
        llama.model, llama.family))}  # fmt: skip
    assert rows["attention"].params == attention
    assert rows["feed_forward"].params == feed_forward
    assert rows["overall"].params == attention + feed_forward
    assert rows["final_layer"].params == final
    norms = n * 2 * h + h
    # the head is tied to the embeddings, so the total counts that matrix once
    assert total_trainable(llama.model) == v * h + attention + feed_forward + norms


def test_bert_counts_include_biases(tiny):
    bert = tiny("bert")
    rows = {r.group: r for r in group_rows(bert.model, classify_linear_layers(
        bert.model, bert.family))}  # fmt: skip
    h, i, v = 32, 64, 120
    assert rows["attention"].params == 2 * 4 * (h * h + h)
    assert rows["feed_forward"].params == 2 * ((h * i + i) + (i * h + h))
    assert rows["final_layer"].params == v * h + v


def test_albert_shared_layers_counted_once(tiny):
    albert = tiny("albert")  # 3 layers, one shared layer group
    att = names(albert, "attention")
    assert len(att) == 4 and all("albert_layer_groups.0.albert_layers.0" in n for n in att)
    assert names(albert, "other") == [
        "albert.encoder.embedding_hidden_mapping_in",
        "predictions.dense",
    ]


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_every_family_has_attention_ff_and_head(tiny, model_type):
    loaded = tiny(model_type)
    layers = classify_linear_layers(loaded.model, loaded.family)
    for group in ("attention", "feed_forward", "overall", "final_layer", "all_linear"):
        assert resolve_group(layers, group), group
    roles = {layer.role for layer in layers}
    assert {"attention", "feed_forward", "final_layer"} <= roles
    has_cross = bool([layer for layer in layers if layer.cross])
    assert has_cross == (loaded.family.value == "encoder-decoder")


def test_gpt2_conv1d_layers_are_found(tiny):
    gpt2 = tiny("gpt2")
    assert names(gpt2, "attention") == [
        f"transformer.h.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj")
    ]
    layers = classify_linear_layers(gpt2.model, gpt2.family)
    c_attn = next(layer for layer in layers if layer.name.endswith("0.attn.c_attn"))
    assert (c_attn.out_features, c_attn.in_features) == (96, 32)


def test_unknown_group_names_the_choices(tiny):
    layers = classify_linear_layers(tiny("llama").model, tiny("llama").family)
    with pytest.raises(GroupError, match=r"unknown module group 'attn'.*feed_forward"):
        resolve_group(layers, "attn")


def test_union_of_groups(tiny):
    llama = tiny("llama")
    assert names(llama, "overall+final_layer") == names(llama, "all_linear")
    assert set(GROUPS) >= {"attention", "feed_forward", "overall", "final_layer"}


def test_summarize_names_collapses_indices_and_leaves():
    got = summarize_names([f"m.layers.{i}.attn.{p}" for i in range(3) for p in "qk"] + ["head"])
    assert got == ["m.layers.{0-2}.attn.{q,k}", "head"]


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_the_original_studys_bert_grouping(tiny, model_type):
    """Cost of Compression's BERT/RoBERTa code: attention = Q, K, V; feed-forward = the MLP
    plus the attention output projection; the two split `attention + feed_forward` exactly."""
    loaded = tiny(model_type)
    prefix = f"{model_type}.encoder.layer"
    qkv = [f"{prefix}.{i}.attention.self.{p}" for i in range(2) for p in ("query", "key", "value")]
    ff = [f"{prefix}.{i}.{p}" for i in range(2)
          for p in ("attention.output.dense", "intermediate.dense", "output.dense")]  # fmt: skip
    assert names(loaded, "attention_qkv") == qkv
    assert names(loaded, "feed_forward_with_attn_out") == ff
    assert sorted(qkv + ff) == sorted(names(loaded, "attention+feed_forward"))
    assert "feed_forward_with_attn_out" in GROUPS


def test_feed_forward_with_attn_out_takes_every_output_projection(tiny):
    t5 = tiny("t5")  # self- and cross-attention blocks, each with its own output projection
    outputs = {n for n in names(t5, "feed_forward_with_attn_out") if n.endswith(".o")}
    assert outputs == {n for n in names(t5, "attention") if n.endswith(".o")}
    assert len(outputs) == 6  # 2 encoder self, 2 decoder self, 2 cross
    assert set(names(t5, "feed_forward")) < set(names(t5, "feed_forward_with_attn_out"))
