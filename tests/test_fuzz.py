"""Fuzzing the two parsers users feed text to: the recipe parser and the study spec loader.

Random strings and random mutations of valid inputs, from a fixed seed and in a fixed count (so
a failure reproduces), may end in exactly two ways: a `KnowcompError` whose message is one line,
or a valid result (a recipe that writes back to itself; a spec whose trials expand). Anything
else (a `TypeError` from deep inside, a `RecursionError`, a silent 0.0) is a bug.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from knowcomp.compress import parse_recipe
from knowcomp.errors import KnowcompError
from knowcomp.study.spec import load_spec
from knowcomp.study.trials import validate
from tests.conftest import build_tiny
from tests.test_models import _save_tiny_with_tokenizer

SEED = 17
RECIPE_CASES = 1500
SPEC_CASES = 300

VALID_RECIPES = [
    "prune:l1_unstructured:overall:0.2",
    "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:all_linear",
    "prune:nm:feed_forward:n=2:m=4",
    "quant:weight_only:attention:bits=4:group_size=32",
    "prune:ln_structured:feed_forward:50%",
    "overall-gpq",
    "prune:random_unstructured:attention+final_layer:0.3",
    "- {method: l1_unstructured, group: overall, level: 0.5}",
    "steps: [{method: weight_only, group: [attention, feed_forward], bits: 8}]",
]
TOKENS = ["prune", "quant", "l1_unstructured", "nm", "weight_only", "dynamic_int8", "gptq",
          "overall", "attention", "feed_forward", "final_layer", "all_linear", "0.5", "1e-400",
          "50%", "nan", "-1", "level=", "n=", "bits=", "\uff10.\uff15", "+", ",", ":", "=", "{",
          "}", "[", "]", "-", "steps", "\n", " ", "'", '"', "\x00", "\u202e", "~", "*", "&a",
          "!!python/object:os.system", ".yaml", "none", "true"]  # fmt: skip


def _random_text(rng: random.Random) -> str:
    if rng.random() < 0.3:  # arbitrary characters, including non-ASCII and control ones
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)]))
                       for _ in range(rng.randrange(0, 40)))  # fmt: skip
    return "".join(rng.choice(TOKENS) for _ in range(rng.randrange(1, 14)))


def _mutate(rng: random.Random, text: str) -> str:
    """Delete, duplicate, replace or insert a slice; swap in a token."""
    for _ in range(rng.randrange(1, 4)):
        i, j = sorted(rng.randrange(0, len(text) + 1) for _ in range(2))
        op = rng.randrange(5)
        if op == 0:
            text = text[:i] + text[j:]
        elif op == 1:
            text = text[:j] + text[i:j] + text[j:]
        elif op == 2:
            text = text[:i] + rng.choice(TOKENS) + text[j:]
        elif op == 3:
            text = text[:i] + _random_text(rng) + text[i:]
        else:
            text = text.replace(rng.choice(TOKENS), rng.choice(TOKENS), 1)
    return text


def _clean_error(err: KnowcompError) -> None:
    message = str(err)
    assert message.strip() and "\n" not in message.strip(), repr(message)


def test_recipe_parser_gives_a_recipe_or_a_clean_error():
    rng = random.Random(SEED)
    parsed = 0
    for _ in range(RECIPE_CASES):
        text = (_mutate(rng, rng.choice(VALID_RECIPES)) if rng.random() < 0.7
                else _random_text(rng))  # fmt: skip
        if text.strip().endswith((".yaml", ".yml")):
            continue  # a file path: the file reader is fuzzed through the spec loader below
        try:
            recipe = parse_recipe(text)
        except KnowcompError as err:
            _clean_error(err)
            continue
        except Exception as err:
            pytest.fail(f"parse_recipe({text!r}) raised {type(err).__name__}: {err}")
        parsed += 1
        again = parse_recipe(recipe.to_compact())  # a valid plan writes back to itself
        assert again.to_compact() == recipe.to_compact(), text
        for step in recipe.steps:
            level = step.level
            assert level is None or 0.0 <= level <= 1.0, (text, level)
    assert parsed > 50  # the mutations also keep many recipes valid: both outcomes are exercised


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz-model")
    _save_tiny_with_tokenizer(build_tiny("llama"), folder)
    return folder


def _valid_spec(model: Path) -> dict:
    return {
        "name": "fuzz",
        "models": [str(model)],
        "probes": ["lama-squad", "piqa"],
        "limit": 5,
        "seeds": [0, 1],
        "output": "runs/fuzz.sqlite",
        "dtype": "float32",
        "device": "cpu",
        "recipes": [
            {"name": "p", "recipe": "prune:l1_unstructured:overall:{level}", "levels": [0.2, 0.4]},
            "quant:dynamic_int8:attention",
            {"preset": "final-layer"},
        ],
    }


def _mutate_value(rng: random.Random, value):
    """A structural mutation of a parsed spec: wrong types, missing or unknown keys."""
    choices = [None, 0, -1, 1.5, "", "x", [], {}, [None], ["a", "a"], {"k": "v"}, True,
               "1e-400", "\uff11", 10**30, [[0]]]  # fmt: skip
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        op = rng.randrange(3)
        if op == 0:
            del value[key]
        elif op == 1:
            value[key] = _mutate_value(rng, value[key])
        else:
            value[rng.choice(["colour", "levels", "recipe", "seeds", 3, "preset"])] = rng.choice(
                choices
            )
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        value[i] = _mutate_value(rng, value[i])
        return value
    return rng.choice(choices)


def test_spec_loader_gives_a_plan_or_a_clean_error(model_folder, tmp_path):
    rng = random.Random(SEED)
    valid_text = yaml.safe_dump(_valid_spec(model_folder), sort_keys=False)
    path = tmp_path / "study.yaml"
    planned = 0
    for number in range(SPEC_CASES):
        kind = rng.randrange(3)
        if kind == 0:
            data = _valid_spec(model_folder)
            for _ in range(rng.randrange(1, 3)):
                data = _mutate_value(rng, data)
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        elif kind == 1:
            path.write_text(_mutate(rng, valid_text), encoding="utf-8", errors="surrogatepass")
        else:
            raw = bytearray(valid_text.encode())
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            path.write_bytes(bytes(raw))
        try:
            trials = validate(load_spec(path))
        except KnowcompError as err:
            _clean_error(err)
            continue
        except Exception as err:
            pytest.fail(f"case {number}: {type(err).__name__}: {err}\n{path.read_bytes()!r}")
        planned += 1
        assert trials and all(t.model for t in trials)
    assert planned > 5
    assert not (tmp_path / "runs").exists()  # validating writes nothing
