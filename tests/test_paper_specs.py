"""The first study's presets as its code ran them, and sweeps over any recipe parameter."""

from __future__ import annotations

import pytest

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.modules.groups import classify_linear_layers, resolve_group
from knowcomp.study import PRESETS, expand, preset_spec


def _recipes(preset: str) -> set[str]:
    return {t.recipe for t in expand(preset_spec(preset, ("m",))) if t.recipe}


def test_the_studys_overall_gq_and_gpq_quantize_the_final_layer_too():
    gq = _recipes("namburi2023-quantization")
    assert gq == {"quant:dynamic_int8:all_linear", "quant:dynamic_int8:attention",
                  "quant:dynamic_int8:feed_forward"}  # fmt: skip
    assert {t.seed for t in expand(preset_spec("namburi2023-quantization", ("m",)))} == {
        40, 50, 60}  # fmt: skip
    gpq = _recipes("namburi2023-prune-quantize")
    assert "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:all_linear" in gpq
    assert "prune:l1_unstructured:attention:0.4,quant:dynamic_int8:attention" in gpq
    assert len(gpq) == 6
    # today's presets keep their recipes (and so their trial keys)
    assert "quant:dynamic_int8:overall" in _recipes("global-quantization")


def test_the_bert_preset_uses_the_studys_bert_grouping():
    recipes = _recipes("namburi2023-bert")
    assert "quant:dynamic_int8:attention_qkv" in recipes
    assert "quant:dynamic_int8:feed_forward_with_attn_out" in recipes
    assert "prune:l1_unstructured:attention_qkv:0.9" in recipes
    assert "quant:dynamic_int8:all_linear" in recipes
    assert not any(":attention:" in r or ":feed_forward:" in r for r in recipes)
    whole = _recipes("namburi2023")
    assert len(whole) == len(recipes) == 3 * 9 + 3 + 6 + 2 * 9
    assert {"namburi2023", "namburi2023-bert"} <= set(PRESETS)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_every_recipe_of_the_bert_preset_runs_on_a_tiny_model(tiny, model_type):
    loaded = tiny(model_type)
    layers = {layer.name: layer for layer in classify_linear_layers(loaded.model, loaded.family)}
    session = CompressionSession(loaded)
    for recipe in sorted(r for r in _recipes("namburi2023-bert") if ":0.2" in r or "0." not in r):
        assert session.apply(parse_recipe(recipe)).groups, recipe
        session.restore()
    session.apply(parse_recipe("quant:dynamic_int8:all_linear"))
    quantized = {name for name, m in loaded.model.named_modules()
                 if type(m).__name__ == "Linear" and "quantized" in type(m).__module__}  # fmt: skip
    head = next(n for n, layer in layers.items() if layer.role == "final_layer")
    assert head in quantized and quantized == set(layers)  # every linear layer, head included
    session.restore()
    ff = resolve_group(list(layers.values()), "feed_forward_with_attn_out")
    assert all(layer.name.endswith("dense") for layer in ff)
