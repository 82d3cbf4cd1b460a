"""Recipes parse from the compact form and YAML, and bad ones fail before any work."""

from __future__ import annotations

import pytest

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.errors import GroupError, RecipeError


def test_compact_round_trip():
    recipe = parse_recipe("prune:l1_unstructured:attention:0.2,quant:dynamic_int8:attention")
    assert [s.method.name for s in recipe.steps] == ["l1_unstructured", "dynamic_int8"]
    assert recipe.steps[0].level == 0.2
    assert parse_recipe(recipe.to_compact()) == recipe


def test_options_and_percent_levels():
    recipe = parse_recipe(
        "prune:l1_unstructured:overall:30%:scope=layer,quant:weight_only:attention:bits=4:group_size=32"
    )
    assert recipe.steps[0].level == pytest.approx(0.3)
    assert recipe.steps[0].method.scope == "layer"
    assert (recipe.steps[1].method.bits, recipe.steps[1].method.group_size) == (4, 32)


def test_yaml_file_and_group_lists(tmp_path):
    path = tmp_path / "gpq.yaml"
    path.write_text(
        "steps:\n"
        "  - {method: l1_unstructured, group: overall, level: 0.2}\n"
        "  - {method: dynamic_int8, group: [overall, final_layer]}\n"
    )
    recipe = parse_recipe(str(path))
    assert recipe.steps[1].group == "overall+final_layer"
    assert recipe == parse_recipe(
        "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:overall+final_layer"
    )


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("prune:l1:attention:0.2", RecipeError, "unknown compression method 'l1'"),
        ("prune:l1_unstructured:attn:0.2", GroupError, "unknown module group 'attn'"),
        ("prune:l1_unstructured:attention:1.5", RecipeError, r"fraction in \[0, 1\]"),
        ("prune:l1_unstructured:attention:-0.1", RecipeError, "level must be a fraction"),
        ("prune:ln_structured:attention:2", RecipeError, "level must be a fraction"),
        ("quant:dynamic_int8:attention,prune:l1_unstructured:attention:0.2", RecipeError,
         "after step 1 quantized it"),
        ("quant:dynamic_int8:attention:0.3", RecipeError, "takes no level"),
        ("prune:l1_unstructured:attention", RecipeError, "needs a level"),
        ("quant:l1_unstructured:attention:0.2", RecipeError, "is a prune method"),
        ("prune:l1_unstructured:attention:0.2:scope=foo", RecipeError, "scope must be one of"),
        ("quant:weight_only:feed_forward:bits=x", RecipeError, "bits must be int"),
        ("quant:weight_only:feed_forward:bits=12", RecipeError, "bits must be 2 to 8"),
        ("prune:nm:feed_forward:n=4:m=4", RecipeError, "0 < n < m"),
        ("prune:l1_unstructured", RecipeError, "needs kind:method:group"),
        ("missing.yaml", RecipeError, "does not exist"),
        ("", RecipeError, "empty recipe"),
    ],
)  # fmt: skip
def test_bad_recipes_fail_with_one_clear_line(text, error, message):
    with pytest.raises(error, match=message) as info:
        parse_recipe(text)
    assert "\n" not in str(info.value)


def test_overlapping_groups_checked_against_the_model(tiny):
    session = CompressionSession(tiny("llama"))
    recipe = parse_recipe("quant:dynamic_int8:overall,prune:l1_unstructured:attention:0.3")
    with pytest.raises(RecipeError, match="already quantized"):
        session.plan(recipe)


def test_empty_group_fails_before_any_weight_changes(tiny):
    loaded = tiny("llama")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    recipe = parse_recipe(
        "prune:l1_unstructured:overall:0.5,prune:l1_unstructured:cross_attention:0.5"
    )
    with pytest.raises(GroupError, match="'cross_attention' is empty for LlamaForCausalLM"):
        CompressionSession(loaded).apply(recipe)
    assert all(torch_equal(before[k], v) for k, v in loaded.model.state_dict().items())


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
