"""Encoder-decoders on the choice, language and open-answer tasks: requests built as lm-eval's
seq2seq backend builds them, the CLI on a saved T5 folder (checked against lm-eval item by
item), the first study's presets on T5, and the refusals that remain for encoders."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.errors import KnowcompError
from knowcomp.models import load_model
from knowcomp.probes.base import RunOptions
from knowcomp.probes.engine import Request
from knowcomp.probes.generate import StopRule, generate_texts
from knowcomp.probes.mc import seq2seq
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take
from tests.conftest import build_tiny
from tests.seq2seq_tokenizers import bart_tokenizer, build, t5_tokenizer, tiny_seq2seq

STUDY_PROBES = ("boolq", "piqa", "winogrande")  # the first study's choice tasks
LIMIT = 2


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> Path:
    """A tiny random T5 and its tokenizer (trained on the study tasks' first items), saved as a
    model folder: a real model spec for the CLI and for studies."""
    texts = [
        context + continuation
        for probe in STUDY_PROBES
        for item in take(get_probe(probe).items(RunOptions())[0], LIMIT, 0)
        for context, continuation in item.pairs
    ]
    loaded = tiny_seq2seq("t5", t5_tokenizer(texts))
    folder = tmp_path_factory.mktemp("tiny-t5")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


# -- requests ---------------------------------------------------------------------------------


def test_pairs_split_as_lm_evals_seq2seq_encode_pair():
    t5 = t5_tokenizer(["The passage says yes"])
    ctx, cont = seq2seq.split_pair(t5, "The passage  ", "says yes")
    assert ctx == t5.encode("The passage")  # with T5's `</s>` ...
    assert ctx[-1] == t5.eos_token_id
    assert cont == t5.encode("  says yes", add_special_tokens=False)  # ... moved spaces, none
    # An empty context is the prefix token (T5 has no BOS: its EOS) ...
    assert seq2seq.split_pair(t5, "", " yes") == (
        [t5.eos_token_id], t5.encode(" yes", add_special_tokens=False)
    )  # fmt: skip
    # ... and text that starts with the prefix token's text gets no special tokens added.
    assert seq2seq.split_pair(t5, "</s> The", " passage")[0] == t5.encode(
        "</s> The", add_special_tokens=False
    )
    bart = bart_tokenizer(["The passage says yes"])
    ctx, _ = seq2seq.split_pair(bart, "The passage", " says")
    assert (ctx[0], ctx[-1]) == (bart.bos_token_id, bart.eos_token_id)
    assert seq2seq.split_pair(bart, "", " yes")[0] == [bart.bos_token_id]


def test_requests_feed_the_models_label_shift_and_cut_the_context_from_the_left():
    t5 = build("t5", ["one two three four five six seven"])
    bart = build("bart", ["one two three four five six seven"])
    assert (seq2seq.decoder_start_id(t5.model), seq2seq.decoder_start_id(bart.model)) == (0, 2)
    text = ("one two three four five", " six seven")
    context, cont = seq2seq.split_pair(t5.tokenizer, *text)
    window = len(cont) + 1
    assert len(context) > window
    request = seq2seq.pair_request(t5.tokenizer, *text, window, 0)
    assert request == Request(tuple(context[-window:]), tuple(range(len(cont))), tuple(cont),
                              (0, *cont[:-1]))  # fmt: skip
    with pytest.raises(KnowcompError, match=f"does not fit the model's {window - 2}-token"):
        seq2seq.pair_request(t5.tokenizer, *text, window - 2, 0)


def test_scores_equal_one_forward_with_labels_per_pair():
    """The engine's batched, deduplicated scores equal the model's own `labels=` forward."""
    pairs = [("Question: is it true?\nAnswer:", " yes"), ("Question: is it true?\nAnswer:", " no"),
             ("", " Paris, of course"), ("Question: is it true?\nAnswer:", " yes")]  # fmt: skip
    for model_type in ("t5", "bart"):
        loaded = build(model_type, [c + x for c, x in pairs])
        scored = seq2seq.score_pairs(loaded, pairs)
        for (context, continuation), result in zip(pairs, scored, strict=True):
            ctx, cont = seq2seq.split_pair(loaded.tokenizer, context, continuation)
            with torch.no_grad():
                logits = loaded.model(input_ids=torch.tensor([ctx]),
                                      labels=torch.tensor([cont])).logits[0]  # fmt: skip
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            expected = [logprobs[i, t].item() for i, t in enumerate(cont)]
            assert result.logprobs == pytest.approx(expected, abs=1e-5)
            assert result.greedy == bool((logits.argmax(-1) == torch.tensor(cont)).all())


def test_one_encoder_pass_per_context_scores_as_one_per_request():
    from knowcomp.probes import engine
    from knowcomp.probes.mc.requests import scaled_progress

    contexts = ["Question: is it true?\nAnswer:", "The passage says", "Numbers: 0 1 2 3 4 5 6"]
    choices = [" yes", " no", " Paris, of course", " 7 8 9"]
    pairs = [(c, x) for c in contexts for x in choices]
    for model_type in ("t5", "bart"):
        loaded = build(model_type, [c + x for c, x in pairs])
        start = seq2seq.decoder_start_id(loaded.model)
        requests = [seq2seq.pair_request(loaded.tokenizer, c, x, 512, start) for c, x in pairs]
        done = []
        for max_tokens in (48, 4096):  # several batches, and one
            shared = seq2seq.score_shared_encoder(
                loaded.model, requests, pad_id=loaded.tokenizer.pad_token_id,
                max_tokens=max_tokens, progress=scaled_progress(done.append, len(requests), None),
            )  # fmt: skip
            alone = engine.score(loaded.model, loaded.family, requests,
                                 pad_id=loaded.tokenizer.pad_token_id)  # fmt: skip
            for a, b in zip(shared, alone, strict=True):
                assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
                assert (a.greedy, a.first_rank, a.first_top) == (b.greedy, b.first_rank,
                                                                 b.first_top)  # fmt: skip
        assert sum(done) == 2 * len(requests)


def test_a_config_without_a_decoder_start_is_a_one_line_error():
    loaded = build_tiny("t5")  # transformers' T5Config sets no decoder_start_token_id
    with pytest.raises(KnowcompError) as err:
        seq2seq.decoder_start_id(loaded.model)
    assert "no decoder_start_token_id" in str(err.value) and "\n" not in str(err.value)


def test_generation_equals_transformers_greedy_generate():
    prompts = ["Question: what is the capital of France?\nAnswer:", "Numbers: 0 1 2", "Yes"]
    loaded = build("t5", prompts)
    with torch.no_grad():
        for weight in loaded.model.parameters():
            weight.mul_(10) if weight.dim() == 2 else None  # answers that differ by prompt
    rule = StopRule(stops=("zzz",), max_new_tokens=6)
    got = generate_texts(loaded, prompts, rule, max_batch=2)
    for prompt, generation in zip(prompts, got, strict=True):
        ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
        reference = loaded.model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
        expected = reference[0, 1:].tolist()  # after the decoder start token
        assert list(generation.tokens) == expected[: len(generation.tokens)]
        assert generation.finish in ("cap", "eos")
    assert len({g.text for g in got}) > 1


# -- the CLI and studies -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.lmeval
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed")
def test_cli_evaluates_a_t5_folder_as_lm_evals_seq2seq_backend(t5_folder, tmp_path):
    from knowcomp.probes.lmeval_bridge import run_lm_eval, sample_picks, write_choice_task

    out = tmp_path / "results.json"
    result = CliRunner().invoke(cli, ["eval", str(t5_folder), "--probes", ",".join(STUDY_PROBES),
                                      "--limit", str(LIMIT), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert all(probe in result.output for probe in STUDY_PROBES)
    records = {r["probe"]: r["records"] for r in json.loads(out.read_text())["results"]}
    for probe in STUDY_PROBES:
        write_choice_task(tmp_path / "tasks", f"kc_{probe}",
                          take(get_probe(probe).items(RunOptions())[0], LIMIT, 0))  # fmt: skip
    reference = run_lm_eval(
        load_model(str(t5_folder)), [f"kc_{p}" for p in STUDY_PROBES], batch_size=4,
        include_path=tmp_path / "tasks", include_defaults=False, bootstrap_iters=0,
    )  # fmt: skip
    for probe in STUDY_PROBES:
        samples = sorted(reference["samples"][f"kc_{probe}"], key=lambda s: s["doc_id"])
        assert len(samples) == len(records[probe]) == LIMIT
        for record, sample in zip(records[probe], samples, strict=True):
            lls, pick, pick_norm = sample_picks(sample)
            assert record["loglikelihoods"] == pytest.approx(lls, abs=1e-4)
            assert (record["chosen"], record["chosen_norm"]) == (pick, pick_norm)


@pytest.mark.integration
def test_the_first_studys_presets_run_their_choice_tasks_on_t5(t5_folder, tmp_path):
    from knowcomp.study import ResultsStore, preset_spec, run_study
    from knowcomp.study.trials import validate

    spec = preset_spec("all", (str(t5_folder),))
    assert set(STUDY_PROBES) <= set(spec.probes)
    assert len(validate(spec)) > 1  # every probe of the preset can score a T5
    pruning = preset_spec("global-pruning", (str(t5_folder),))
    small = replace(pruning, sweeps=(replace(pruning.sweeps[2], levels=(0.5,)),),
                    probes=STUDY_PROBES, limit=1, output=tmp_path / "t5.sqlite")  # fmt: skip
    summary = run_study(small)
    assert summary.trials == summary.ran == 2  # the baseline and overall pruning at 50%
    with ResultsStore(small.output) as store:
        rows = store.rows()
    assert sorted({r["probe"] for r in rows}) == sorted(STUDY_PROBES) and len(rows) == 6
    pruned = [r for r in rows if r["recipe"] == "prune:l1_unstructured:overall:0.5"]
    assert all(r["sparsity"] == pytest.approx(0.5, abs=1e-3) for r in pruned)
    assert all("acc" in r["metrics"] for r in rows)


# -- what encoders still cannot do --------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "what"),
    [
        ("piqa", "multiple-choice probes"),
        ("lambada", "language-modelling probes"),
        ("triviaqa", "open-answer probes (generation)"),
    ],
)
def test_encoders_are_refused_and_encoder_decoders_are_not(probe, what):
    from knowcomp.models.family import Family

    options = RunOptions()
    assert get_probe(probe).family_problem(Family.ENCODER_DECODER, options) is None
    problem = get_probe(probe).family_problem(Family.ENCODER, options)
    assert (
        problem == f"{what} score continuations with a decoder (a causal LM or an encoder-decoder)"
    )


def test_encoder_runs_fail_in_one_line():
    bert = build_tiny("bert")
    with pytest.raises(KnowcompError) as err:
        get_probe("piqa").run(bert, RunOptions(limit=1))
    assert str(err.value) == (
        "multiple-choice probes score continuations with a decoder (a causal LM or an "
        "encoder-decoder); tiny-bert is an encoder"
    )
