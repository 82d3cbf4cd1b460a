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


# -- sweeps over any parameter -------------------------------------------------------------------
def _spec(recipes: list, **extra):
    from knowcomp.study.spec import spec_from_dict

    return spec_from_dict({"models": ["m"], "recipes": recipes, **extra})


def test_a_sweep_over_bit_widths():
    spec = _spec([{"name": "gptq", "vary": "bits", "levels": [2, 3, 4, 8],
                   "recipe": "quant:gptq:overall:bits={bits}"}])  # fmt: skip
    trials = [t for t in expand(spec) if not t.is_baseline]
    assert [t.recipe for t in trials] == [f"quant:gptq:overall:bits={b}" for b in (2, 3, 4, 8)]
    assert [t.level for t in trials] == [2, 3, 4, 8]
    assert trials[1].label == "gptq bits=3"
    # the same recipe written without a sweep is the same trial
    fixed = _spec(["quant:gptq:overall:bits=3"])
    assert trials[1].key == next(t.key for t in expand(fixed) if not t.is_baseline)


def test_other_options_can_be_swept():
    spec = _spec([
        {"name": "nm", "vary": "n", "levels": [1, 2], "recipe": "prune:nm:feed_forward:n={n}:m=4"},
        {"name": "wo", "vary": "group_size", "levels": [16, 32],
         "recipe": "quant:weight_only:attention:bits=4:group_size={group_size}"},
    ])  # fmt: skip
    recipes = [t.recipe for t in expand(spec) if not t.is_baseline]
    assert "prune:nm:feed_forward:n=2:m=4" in recipes
    assert "quant:weight_only:attention:bits=4:group_size=32" in recipes


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"vary": "bits", "levels": [2, 9]}, r"bits=9: .*bits must be 2 to 8"),
        ({"vary": "bits", "levels": [2.5]}, r"bits=2.5: .*bits must be int"),
        ({"vary": "bits", "levels": ["four"]}, r"bits 'four' is not a number"),
        ({"vary": "bits", "levels": [4, 4]}, r"levels repeat 4"),
        ({"vary": "bits", "levels": []}, r"placeholder but no levels"),
        ({"vary": "Bits!", "levels": [4]}, r"vary names the option"),
        ({"vary": "level", "levels": [4]}, r"levels are fractions in \(0, 1\)"),
        ({"vary": "bitz", "levels": [4]}, r"no \{bitz\} placeholder"),
        (
            {"vary": "bits", "levels": [4], "recipe": "quant:gptq:{group}:bits={bits}"},
            r"also has a \{group\} placeholder",
        ),
        (
            {
                "vary": "bits",
                "levels": [4],
                "recipe": "prune:l1_unstructured:overall:0.5:bits={bits}",
            },
            r"has no option 'bits'",
        ),
    ],
)
def test_swept_values_are_checked_by_the_parameter_they_fill(sweep, message):
    from knowcomp.study.spec import SpecError

    raw = {"name": "s", "recipe": "quant:gptq:overall:bits={bits}", **sweep}
    with pytest.raises(SpecError, match=message):
        _spec([raw])


def test_existing_specs_keep_their_trial_keys_and_spec_hash():
    """A level sweep's trials and spec hash are what they were before sweeps could vary other
    options (the values computed by the code before `vary` existed)."""
    spec = _spec([{"name": "p", "recipe": "prune:l1_unstructured:overall:{level}",
                   "levels": [0.3, 0.6]}], probes=["lama-trex"], limit=5)  # fmt: skip
    assert [t.key for t in expand(spec)] == [
        "18685822e6a2990e87b1", "b49ecf0c2678a6c2ee53", "b7a3822ccc509cdbf24b"]  # fmt: skip
    assert spec.spec_hash() == "6f7cee85da7dd628"
    assert {t.vary for t in expand(spec)} == {"level"}
    assert expand(spec)[1].label == "p 0.3"


# -- sweeps over recovery options ----------------------------------------------------------------
def test_a_sweep_over_prompt_lengths_and_lora_ranks():
    spec = _spec([
        {"name": "prompts", "recipe": "quant:gptq:overall:bits=3", "vary": "tokens",
         "levels": [26, 50, 100], "recover": ["prompt:tokens={tokens}", "lora"]},
        {"name": "ranks", "recipe": "quant:gptq:overall:bits=3", "vary": "r", "levels": [2, 4],
         "recover": "lora:r={r}"},
    ])  # fmt: skip
    trials = [t for t in expand(spec) if not t.is_baseline]
    assert [t.method for t in trials] == [
        None, "prompt:tokens=26", "prompt:tokens=50", "prompt:tokens=100", "lora", "lora:r=2",
        "lora:r=4"]  # fmt: skip
    assert {t.recipe for t in trials} == {"quant:gptq:overall:bits=3"}  # compressed once
    assert trials[2].label == "prompts tokens=50 + prompt:tokens=50"
    assert trials[0].level is None  # the compressed trial is not one of the values
    # a swept method is the trial the same method written out is
    written = _spec([{"name": "w", "recipe": "quant:gptq:overall:bits=3",
                      "recover": ["prompt:tokens=50", "lora:r=4"]}])  # fmt: skip
    keys = {t.method: t.key for t in expand(written)}
    assert trials[2].key == keys["prompt:tokens=50"] and trials[-1].key == keys["lora:r=4"]


def test_recipe_and_method_swept_together_take_the_same_value():
    spec = _spec([{"name": "both", "recipe": "quant:gptq:overall:bits={bits}", "vary": "bits",
                   "levels": [3, 4], "recover": ["lora"]}])  # fmt: skip
    pairs = [(t.recipe, t.method) for t in expand(spec) if not t.is_baseline]
    assert pairs == [
        ("quant:gptq:overall:bits=3", None),
        ("quant:gptq:overall:bits=3", "lora"),
        ("quant:gptq:overall:bits=4", None),
        ("quant:gptq:overall:bits=4", "lora"),
    ]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"vary": "r", "levels": [2, 0], "recover": "lora:r={r}"}, r"recover: r=0: "),
        ({"vary": "r", "levels": [2.5], "recover": "lora:r={r}"}, r"recover: r=2.5: "),
        ({"vary": "r", "levels": [], "recover": "lora:r={r}"}, r"placeholder but no levels"),
        ({"vary": "r", "levels": [2], "recover": "lora"}, r"no \{r\} placeholder .*recover"),
    ],
)
def test_swept_recovery_values_are_checked_by_the_method(sweep, message):
    from knowcomp.study.spec import SpecError

    with pytest.raises(SpecError, match=message):
        _spec([{"name": "s", "recipe": "quant:gptq:overall:bits=3", **sweep}])


def test_recovered_specs_keep_their_trial_keys_and_spec_hash():
    """Keys and hash of a spec with recover steps, as the code before recovery sweeps gave."""
    spec = _spec([
        {"name": "g", "recipe": "quant:gptq:overall:bits={bits}", "vary": "bits",
         "levels": [3, 4], "recover": ["lora", "prompt:tokens=26", "idp:tokens=26+100"]},
        {"name": "p", "recipe": "prune:sparsegpt:overall:{level}", "levels": [0.5],
         "recover": ["lora:r=4"]},
    ], probes=["piqa"], limit=5)  # fmt: skip
    assert [t.key for t in expand(spec)] == [
        "18685822e6a2990e87b1", "47e738fea78a38b79734", "71b8a80991b865bd5d3a",
        "3df59a210bf5d2270dcf", "0f01f2aa2831e18d631b", "706464192bfa0422af11",
        "68b033b4a7846b68de2a", "b9591552ed9a5207b8fc", "37471b27b2ad566d1dff",
        "95a623bac50e6068907c", "36ded81dd71377c1a288"]  # fmt: skip
    assert spec.spec_hash() == "734297faa0640b9d"


def test_the_namburi2023_demo_spec_is_valid():
    from pathlib import Path

    from knowcomp.study.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "namburi2023-demo.yaml")
    trials = expand(spec)
    assert len(trials) == 12 and trials[0].is_baseline
    assert "prune:l1_unstructured:feed_forward:0.4,quant:dynamic_int8:feed_forward" in {
        t.recipe for t in trials}  # fmt: skip
