"""Layer-wise similarity to the uncompressed model (Hoang et al., 2024, Fig. 5): checked against a
brute-force computation, with prefixes, on the command line, in a study and in the report."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from knowcomp.analysis import (
    ReferenceStates,
    default_texts,
    layerwise_similarity,
    make_batches,
    read_texts,
)
from knowcomp.cli.main import cli
from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.errors import KnowcompError
from tests.conftest import build_tiny
from tests.test_models import _save_tiny_with_tokenizer

PRUNE = "prune:l1_unstructured:overall:0.5"


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0} | {f"w{i}": i for i in range(1, 120)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="w1")


def _texts(count: int = 5) -> list[str]:
    """Texts of different lengths (3 to 11 words, one token each), so batches carry padding.
    (Words w20 to w99 only: the pad token w1 is matched inside longer words like w105.)"""
    g = torch.Generator().manual_seed(7)
    lengths = [3 + (2 * i) % 9 for i in range(count)]
    return [
        " ".join(f"w{int(t)}" for t in torch.randint(20, 100, (n,), generator=g)) for n in lengths
    ]


def _batches(count: int = 5, batch_size: int = 2):
    return make_batches(_tokenizer(), _texts(count), batch_size=batch_size)


def _compressed(model_type: str, recipe: str = PRUNE):
    loaded = build_tiny(model_type)
    CompressionSession(loaded).apply(parse_recipe(recipe))
    return loaded.model


def _eager(model: nn.Module) -> nn.Module:
    model.set_attn_implementation("eager")
    return model


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def _brute_force(reference, candidate, texts, prefix: int = 0):
    """Per layer (attention, hidden): each text alone, unpadded, with plain transformers calls;
    means over every token (hidden) and every head x query row (attention)."""
    tok = _tokenizer()
    hidden_sums, attention_sums, tokens, rows = None, None, 0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"]
            mask = torch.ones_like(ids)
            ref = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                            output_attentions=True)  # fmt: skip
            cand = candidate(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                             output_attentions=True)  # fmt: skip
            layers = len(ref.attentions)
            if hidden_sums is None:
                hidden_sums, attention_sums = [0.0] * layers, [0.0] * layers
            for i in range(layers):
                hidden_sums[i] += _cos(
                    ref.hidden_states[i + 1][0], cand.hidden_states[i + 1][0]
                ).sum()
                rows_c = cand.attentions[i][0][:, :, prefix:]
                rows_c = rows_c / rows_c.sum(-1, keepdim=True)
                attention_sums[i] += _cos(ref.attentions[i][0], rows_c).sum()
            tokens += ids.shape[1]
            rows += ids.shape[1] * ref.attentions[0].shape[1]
    return [(a / rows, h / tokens) for a, h in zip(attention_sums, hidden_sums, strict=True)]


def _values(result):
    return [(layer.attention_cosine, layer.hidden_cosine) for layer in result.layers]


# -- the measurement -------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "gpt2", "bert"])
def test_identical_models_give_one_at_every_layer(model_type):
    reference, candidate = build_tiny(model_type).model, build_tiny(model_type).model
    result = layerwise_similarity(reference, candidate, _batches())
    assert len(result.layers) == 2 and result.texts == 5
    assert result.tokens == sum(len(t.split()) for t in _texts())
    for attention, hidden in _values(result):
        assert attention == pytest.approx(1.0, abs=1e-9)
        assert hidden == pytest.approx(1.0, abs=1e-9)
    assert result.prefix_keys == 0 and result.prompt_positions == 0
    assert result.stack == ("encoder" if model_type == "bert" else "decoder")
    # the models' own attention implementation is back
    assert reference.config._attn_implementation == "sdpa"
    assert candidate.config._attn_implementation == "sdpa"


@pytest.mark.integration
@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_compressed_model_equals_a_brute_force_computation(model_type):
    reference, candidate = build_tiny(model_type).model, _compressed(model_type)
    result = layerwise_similarity(reference, candidate, _batches(batch_size=3))
    expected = _brute_force(_eager(reference), _eager(candidate), _texts())
    for (attention, hidden), (want_a, want_h) in zip(_values(result), expected, strict=True):
        assert attention < 1 and hidden < 1
        assert attention == pytest.approx(float(want_a), rel=1e-5)
        assert hidden == pytest.approx(float(want_h), rel=1e-5)


def test_the_kept_reference_gives_the_same_numbers_as_two_models():
    """One model compressed in place, the reference captured first: as with two copies."""
    batches = _batches()
    loaded = build_tiny("llama")
    states = ReferenceStates.capture(loaded.model, batches)
    assert states.texts == 5 and states.nbytes > 0
    CompressionSession(loaded).apply(parse_recipe(PRUNE))
    kept = layerwise_similarity(states, loaded.model)
    direct = layerwise_similarity(build_tiny("llama").model, loaded.model, batches)
    for (a1, h1), (a2, h2) in zip(_values(kept), _values(direct), strict=True):
        assert a1 == pytest.approx(a2, rel=1e-9) and h1 == pytest.approx(h2, rel=1e-9)
    with pytest.raises(KnowcompError, match="batches differ"):
        layerwise_similarity(states, loaded.model, _batches(batch_size=3))


class KeyValuePrefix(nn.Module):
    """A candidate that runs the model after a key/value cache prefix of `length` positions
    (the prefix tokens run through the model first), as prefix tuning does."""

    def __init__(self, model: nn.Module, length: int, *, masked: bool) -> None:
        super().__init__()
        self.model, self.length, self.masked = model, length, masked
        self.prefix_ids = torch.randint(
            3, 100, (1, length), generator=torch.Generator().manual_seed(3)
        )

    def forward(self, input_ids, attention_mask, **kwargs):
        batch = input_ids.shape[0]
        cache = self.model(self.prefix_ids.expand(batch, -1), use_cache=True).past_key_values
        prefix_mask = torch.full((batch, self.length), 0 if self.masked else 1)
        mask = torch.cat([prefix_mask, attention_mask], dim=1)
        return self.model(input_ids=input_ids, attention_mask=mask, past_key_values=cache, **kwargs)


@pytest.mark.integration
def test_a_key_value_prefix_is_compared_on_the_input_columns():
    reference = build_tiny("llama").model
    # A prefix masked out changes nothing (rotary positions are relative): 1.0 everywhere, and
    # only if the input columns are the ones compared.
    hidden_prefix = KeyValuePrefix(build_tiny("llama").model, 4, masked=True)
    masked = layerwise_similarity(reference, hidden_prefix, _batches())
    assert masked.prefix_keys == 4 and masked.prompt_positions == 0
    assert any("4 prefix key position" in note for note in masked.notes)
    for attention, hidden in _values(masked):
        assert attention == pytest.approx(1.0, abs=1e-6)
        assert hidden == pytest.approx(1.0, abs=1e-6)
    # A live prefix: the input columns, renormalised, against a brute-force computation.
    candidate = KeyValuePrefix(build_tiny("llama").model, 4, masked=False)
    live = layerwise_similarity(reference, candidate, _batches())
    expected = _brute_force(_eager(reference), _eager_wrapped(candidate), _texts(), prefix=4)
    for (attention, hidden), (want_a, want_h) in zip(_values(live), expected, strict=True):
        assert attention < 1 and hidden < 1
        assert attention == pytest.approx(float(want_a), rel=1e-5)
        assert hidden == pytest.approx(float(want_h), rel=1e-5)


def _eager_wrapped(wrapper: KeyValuePrefix) -> KeyValuePrefix:
    _eager(wrapper.model)
    return wrapper


@pytest.mark.parametrize("kind", ["prefix", "prompt"])
def test_peft_prefix_and_prompt_tuning_candidates(kind):
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    config = (PrefixTuningConfig if kind == "prefix" else PromptTuningConfig)(
        task_type="CAUSAL_LM", num_virtual_tokens=3
    )
    candidate = get_peft_model(build_tiny("llama").model, config)
    result = layerwise_similarity(build_tiny("llama").model, candidate, _batches())
    assert result.prefix_keys == 3
    assert result.prompt_positions == (3 if kind == "prompt" else 0)
    for attention, hidden in _values(result):
        assert 0 < attention <= 1 + 1e-9 and -1 <= hidden <= 1 + 1e-9


def test_encoder_decoder_compares_its_encoder():
    result = layerwise_similarity(build_tiny("t5").model, _compressed("t5"), _batches())
    assert result.stack == "encoder" and len(result.layers) == 2
    assert any("encoder-decoder" in note for note in result.notes)
    assert all(h < 1 for _, h in _values(result))


def test_texts_and_batches(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("first  text\nstill first\n\n\nsecond text\n\n", encoding="utf-8")
    assert read_texts(path) == ["first text still first", "second text"]
    assert read_texts(path, limit=1) == ["first text still first"]
    (tmp_path / "blank.txt").write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(KnowcompError, match="holds no text"):
        read_texts(tmp_path / "blank.txt")
    batches = _batches(5, batch_size=2)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 2, 1]
    first = batches[0]["attention_mask"]
    assert first[:, 0].all() and not first[:, -1].all()  # right padding
    texts = default_texts(4)
    assert len(texts) == 4 and texts == default_texts(4) and texts != default_texts(4, seed=1)


# -- the command -----------------------------------------------------------------------------
@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "tiny-llama"
    _save_tiny_with_tokenizer(build_tiny("llama"), folder)
    return folder


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n\n".join(_texts(5)), encoding="utf-8")
    return path


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.integration
def test_command_prints_the_table_and_writes_csv_and_json(tiny_folder, texts_file, tmp_path):
    result = _run("similarity", str(tiny_folder), "-r", PRUNE, "--texts", str(texts_file))
    assert result.exit_code == 0, result.output
    assert "Attention cosine" in result.output and "Hidden cosine" in result.output
    assert "5 texts" in result.output
    csv_path = tmp_path / "sim.csv"
    result = _run("similarity", str(tiny_folder), "-r", PRUNE, "--texts", str(texts_file),
                  "--limit", "3", "--out", str(csv_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "layer,attention_cosine,hidden_cosine,texts"
    assert len(lines) == 3 and lines[1].startswith("0,") and lines[1].endswith(",3")
    json_path = tmp_path / "sim.json"
    result = _run("similarity", str(tiny_folder), "-r", PRUNE, "--texts", str(texts_file),
                  "--out", str(json_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(json_path.read_text())
    assert payload["recipe"] == PRUNE and len(payload["layers"]) == 2
    # the numbers are those of two separate models
    loaded = build_tiny("llama")
    CompressionSession(loaded).apply(parse_recipe(PRUNE))
    tok = _tokenizer()
    direct = layerwise_similarity(build_tiny("llama").model, loaded.model,
                                  make_batches(tok, read_texts(texts_file)))  # fmt: skip
    for stored, layer in zip(payload["layers"], direct.layers, strict=True):
        assert stored["hidden_cosine"] == pytest.approx(layer.hidden_cosine, rel=1e-6)
        assert stored["attention_cosine"] == pytest.approx(layer.attention_cosine, rel=1e-6)


def _one_line_error(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output


def test_command_rejects_bad_input(tiny_folder, texts_file, tmp_path):
    _one_line_error(_run("similarity", str(tmp_path / "nope"), "-r", PRUNE), "nope")
    _one_line_error(_run("similarity", str(tiny_folder), "-r", "prune:bogus:overall:0.5",
                         "--texts", str(texts_file)), "bogus")  # fmt: skip
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    _one_line_error(_run("similarity", str(tiny_folder), "-r", PRUNE, "--texts", str(empty)),
                    "no text")  # fmt: skip
    _one_line_error(_run("similarity", str(tiny_folder), "-r", PRUNE, "--texts", str(texts_file),
                         "--out", str(tmp_path / "x.txt")), ".csv or .json")  # fmt: skip
    assert "--recipe" in _run("similarity", "--help").output


# -- the study and the report ----------------------------------------------------------------
@pytest.mark.integration
def test_a_study_stores_similarity_and_the_report_draws_it(tiny_folder, tmp_path):
    from knowcomp.report import generate_report
    from knowcomp.study import ResultsStore, run_study
    from knowcomp.study.spec import spec_from_dict

    out = tmp_path / "r.sqlite"
    spec = spec_from_dict({
        "name": "sim", "models": [str(tiny_folder)], "probes": ["piqa"], "limit": 1,
        "output": str(out), "similarity": 3,
        "recipes": [{"name": "prune", "recipe": "prune:l1_unstructured:overall:{level}",
                     "levels": [0.3, 0.7]}],
    })  # fmt: skip
    assert spec.similarity == 3
    run_study(spec)
    with ResultsStore(out) as store:
        rows = store.similarity()
        trials = {t["trial_key"]: t for t in store.trials()}
    assert len(rows) == 2 * 2  # two compressed trials x two layers; none for the baseline
    assert {r["recipe"] for r in rows} == {
        "prune:l1_unstructured:overall:0.3", "prune:l1_unstructured:overall:0.7"}  # fmt: skip
    assert all(r["texts"] == 3 and r["trial_key"] in trials for r in rows)
    by = {(r["level"], r["layer"]): r["hidden_cosine"] for r in rows}
    assert 1 > by[(0.3, 1)] > by[(0.7, 1)]  # more pruning, further from the original
    report = generate_report(out, tmp_path / "report")
    plot = next(p for p in report.plots if p.name == "hoang2024-fig5")
    assert plot.png.is_file() and plot.svg.is_file()
    assert (tmp_path / "report" / "similarity.csv").is_file()
    assert f"id='{plot.name}'" in report.html.read_text()


@pytest.mark.integration
def test_no_similarity_rows_no_plot_and_old_files_read(tiny_folder, tmp_path):
    import sqlite3

    from knowcomp.report import generate_report
    from knowcomp.study import ResultsStore, run_study
    from knowcomp.study.spec import SpecError, spec_from_dict

    out = tmp_path / "r.sqlite"
    spec = spec_from_dict({"models": [str(tiny_folder)], "probes": ["piqa"], "limit": 1,
                           "output": str(out), "recipes": [PRUNE]})  # fmt: skip
    assert spec.similarity == 0
    run_study(spec)
    with sqlite3.connect(out) as conn:  # a file written before the similarity table existed
        conn.execute("DROP TABLE similarity")
    with ResultsStore(out) as store:
        assert store.similarity() == []
    report = generate_report(out, tmp_path / "report")
    assert not any(p.name == "hoang2024-fig5" for p in report.plots)
    assert not (tmp_path / "report" / "similarity.csv").exists()
    with pytest.raises(SpecError, match="similarity"):
        spec_from_dict({"models": ["m"], "recipes": [PRUNE], "similarity": -1})
