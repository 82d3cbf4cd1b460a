"""Generation engine, open-answer probes (TriviaQA, WebQuestions), LAMA generate mode, SciQ, and
the category layout: fast tests on tiny random decoders and hand-made data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from knowcomp.errors import DataError, KnowcompError
from knowcomp.models import Family
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import categories
from knowcomp.probes.base import ProbeResult, RunOptions
from knowcomp.probes.generate import Generation, StopRule, generate, generate_texts
from knowcomp.probes.lama.generated import generation_metrics, slot_stop
from knowcomp.probes.mc.tasks import sciq_prompt
from knowcomp.probes.qa import probes as qa
from knowcomp.probes.qa.normalize import exact_match, normalize, squad_match
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take
from tests.conftest import build_tiny

DECODERS = ["llama", "gpt2", "opt", "qwen2", "gpt_neox", "bloom"]


def tiny_decoder(model_type: str) -> torch.nn.Module:
    """A tiny random decoder; Bloom (positions from the mask, ALiBi) is built here."""
    if model_type != "bloom":
        return build_tiny(model_type).model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("bloom", hidden_size=32, n_layer=2, n_head=2, vocab_size=120)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def greedy_reference(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens by a full forward over the whole sequence at every step (no cache)."""
    sequence = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([sequence])).logits[0, -1]
            sequence.append(int(logits.argmax()))
    return sequence[len(prompt) :]


def some_prompts(n_tokens=(5, 9, 2, 7, 7, 12, 1), seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 110, (n,), generator=g).tolist() for n in n_tokens]


# -- the engine ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", DECODERS)
def test_batched_left_padded_generation_equals_unbatched_greedy(model_type):
    model = tiny_decoder(model_type).double()  # float64: no near-tie flips between shapes
    prompts = some_prompts()
    rule = StopRule(max_new_tokens=10)
    batched = generate(model, prompts, decode=lambda _ids: "", rule=rule, max_batch=8)
    one_by_one = generate(model, prompts, decode=lambda _ids: "", rule=rule, max_batch=1)
    for prompt, a, b in zip(prompts, batched, one_by_one, strict=True):
        assert list(a.tokens) == list(b.tokens) == greedy_reference(model, prompt, 10)
        assert a.finish == b.finish == "cap" and a.capped


def test_stop_strings_and_eos_end_answers_where_greedy_reaches_them():
    model = build_tiny("llama").model.double()
    prompts = some_prompts()
    reference = [greedy_reference(model, p, 12) for p in prompts]
    stop_id, eos_id = reference[0][2], reference[1][4]

    def decode(ids):
        return "".join("." if i == stop_id else chr(ord("a") + i % 26) for i in ids)

    rule = StopRule(stops=(".",), max_new_tokens=12)
    for max_batch in (1, 3, 8):
        got = generate(model, prompts, decode=decode, rule=rule, eos_ids={eos_id},
                       max_batch=max_batch, max_tokens=64)  # fmt: skip
        finishes = set()
        for ref, generation in zip(reference, got, strict=True):
            ends = [k for k, t in enumerate(ref) if t in (stop_id, eos_id)]
            end = ends[0] + 1 if ends else len(ref)
            assert list(generation.tokens) == ref[:end]  # greedy, cut where the answer ended
            finish = "cap" if not ends else ("stop" if ref[ends[0]] == stop_id else "eos")
            assert generation.finish == finish and generation.capped == (finish == "cap")
            assert generation.text == decode(ref[: ends[0] if ends else end])
            finishes.add(finish)
        assert finishes >= {"stop", "eos"}


def test_stop_rule_cut_takes_the_earliest_stop():
    rule = StopRule()
    assert rule.cut(" Paris, France.\nNext") == (" Paris", True)
    assert rule.cut(" Paris") == (" Paris", False)
    assert rule.cut(" lawyer by profession.", extra=(" by profession",)) == (" lawyer", True)
    assert rule.cut("\nParis") == ("", True)


def test_slot_stop_is_the_template_text_after_the_slot():
    rule = StopRule()
    assert slot_stop(" by profession .", rule) == (" by profession",)
    assert slot_stop(" .", rule) == ()
    assert slot_stop("'s capital, and more", rule) == ("'s capital",)


@pytest.mark.parametrize("cap", [0, -3])
def test_generation_cap_below_one_is_one_line(cap):
    with pytest.raises(KnowcompError) as err:
        StopRule(max_new_tokens=cap)
    assert str(err.value) == f"the generation cap (max new tokens) must be at least 1; got {cap}"


def test_empty_stop_string_and_empty_prompt_are_refused():
    with pytest.raises(KnowcompError, match="non-empty"):
        StopRule(stops=("\n", ""))
    model = build_tiny("llama").model
    with pytest.raises(KnowcompError, match="empty prompt"):
        generate(model, [[5, 6], []], decode=lambda _: "", rule=StopRule())


# -- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "answers", "lm_eval", "squad"),
    [
        ("Onion", ["Onion skins", "onion"], True, True),
        ("  ONION ", ["Onion"], True, True),  # case and surrounding whitespace
        ("U.S.A", ["USA"], True, True),  # punctuation goes
        ("St Louis", ["St. Louis"], True, True),
        ("The Beatles", ["Beatles"], False, True),  # lm-eval keeps articles
        ("new  york", ["New York"], False, True),  # ... and inner whitespace
        ("an apple", ["apple"], False, True),
        ("Paris France", ["Paris"], False, False),
        ("", ["Paris"], False, False),
    ],
)
def test_normalisation_cases(prediction, answers, lm_eval, squad):
    assert exact_match(prediction, answers) is lm_eval
    assert squad_match(prediction, answers) is squad


def test_normalize_is_lm_evals_ignore_case_and_punctuation():
    assert normalize('Dr. Who\'s "Tardis"!') == "dr whos tardis"
    assert normalize(" Spaces stay ") == " spaces stay "


# -- QA probes on hand-made data -------------------------------------------------------------


def write_qa_data(root: Path, trivia: list[dict] | None = None, webqs: list | None = None) -> Path:
    (root / "qa").mkdir(parents=True, exist_ok=True)
    trivia = trivia if trivia is not None else [
        {"context": f"Question: What is item {i}?\nAnswer:", "answer": f"Thing {i}",
         "aliases": [f"Thing {i}", f"T{i}"]}
        for i in range(12)
    ]  # fmt: skip
    webqs = webqs if webqs is not None else [
        {"qId": f"wqs{i:06d}", "qText": f"who is person {i}?", "answers": [f"Person {i}"]}
        for i in range(12)
    ]  # fmt: skip
    lines = "".join(json.dumps(r) + "\n" for r in trivia)
    (root / "qa" / "triviaqa_subset.jsonl").write_text(lines)
    (root / "qa" / "webquestions_test.json").write_text(json.dumps(webqs))
    return root


def test_prompts_are_lm_evals():
    assert qa.triviaqa_prompt("Question: Who wrote Emma?\nAnswer:") == (
        "Question: Who wrote Emma??\nAnswer:"
    )  # lm-eval's template adds a `?` after the question's own
    assert qa.triviaqa_prompt("Question: Name the capital\nAnswer:") == (
        "Question: Name the capital?\nAnswer:"
    )
    assert qa.webqs_prompt("what does jamaican people speak?") == (
        "Question: what does jamaican people speak?\nAnswer:"
    )
    assert sciq_prompt("  Cells divide.", "What divides?") == (
        "Cells divide.\nQuestion: What divides?\nAnswer:"
    )
    assert sciq_prompt("", "What divides?") == "\nQuestion: What divides?\nAnswer:"


@pytest.mark.parametrize("probe", ["triviaqa", "webqs"])
def test_qa_metrics_records_and_limit(tmp_path, monkeypatch, probe):
    root = write_qa_data(tmp_path)

    def fake(loaded, prompts, rule, **_kwargs):
        assert rule.stops == ("\n", ".", ",") and rule.max_new_tokens == 7
        out = []
        for k, prompt in enumerate(prompts):
            number = prompt.split("item ")[-1].split("person ")[-1].split("?")[0]
            text = [f" Thing {number}", f" person {number}", " nothing", " t" + number][k % 4]
            out.append(Generation((1, 2), text, "cap" if k % 4 == 2 else "stop"))
        return out

    monkeypatch.setattr(qa, "generate_texts", fake)
    options = RunOptions(limit=8, seed=3, data_dir=root, max_new_tokens=7)
    result = get_probe(probe).run(LoadedModel(None, None, Family.DECODER, "m", "x"), options)
    assert [r["index"] for r in result.records] == take(list(range(12)), 8, 3)
    matched = [r["matched"] for r in result.records]
    # triviaqa: " Thing n" and " tn" (alias Tn) match; webqs: " person n" matches "Person n"
    wanted = [k % 4 in ((0, 3) if probe == "triviaqa" else (1,)) for k in range(8)]
    assert matched == wanted
    assert result.metrics == pytest.approx(
        {"exact_match": sum(wanted) / 8, "exact_match_squad": sum(wanted) / 8, "capped": 2 / 8}
    )
    assert result.counts == {"items": 8, "scored": 8, "capped": 2}
    first = result.records[0]
    assert set(first) >= {"id", "prediction", "matched", "capped", "question"}
    assert first["prediction"] == first["prediction"].strip()
    if probe == "webqs":
        assert first["id"].startswith("wqs")
    assert any("reached the 7-token cap" in note for note in result.notes)
    assert get_probe(probe).count(RunOptions(limit=5, data_dir=root)) == 5


def test_qa_probe_runs_on_a_real_tiny_forward(tmp_path):
    loaded = tiny_with_tokenizer()
    root = write_qa_data(tmp_path)
    result = get_probe("triviaqa").run(loaded, RunOptions(limit=4, data_dir=root,
                                                          max_new_tokens=3))  # fmt: skip
    assert result.counts["items"] == 4 and 0 <= result.metrics["exact_match"] <= 1
    assert all(r["tokens"] <= 3 for r in result.records)
    assert all(r["capped"] == (r["tokens"] == 3 and r["capped"]) for r in result.records)


def test_qa_bad_input_is_one_line(tmp_path):
    root = write_qa_data(tmp_path / "a", webqs=[{"qId": "wqs1", "qText": "who?"}])
    with pytest.raises(DataError) as err:
        get_probe("webqs").count(RunOptions(data_dir=root))
    assert "webquestions_test.json" in str(err.value) and "'answers'" in str(err.value)
    assert "\n" not in str(err.value)

    trivia = [{"context": "Question: Q?\nAnswer:", "answer": "A", "aliases": []}]
    root = write_qa_data(tmp_path / "b", trivia=trivia)
    with pytest.raises(DataError) as err:
        get_probe("triviaqa").count(RunOptions(data_dir=root))
    assert "'aliases' has 0 item(s)" in str(err.value) and "\n" not in str(err.value)

    blank = [{"qId": "wqs7", "qText": "who?", "answers": ["  "]},
             {"qId": "wqs8", "qText": "what?", "answers": ["x"]}]  # fmt: skip
    root = write_qa_data(tmp_path / "c", webqs=blank)
    with pytest.raises(DataError) as err:
        get_probe("webqs").count(RunOptions(data_dir=root))
    assert "question wqs7 has no answer to match" in str(err.value)
    items, notes = get_probe("webqs").items(RunOptions(data_dir=root, skip_malformed=True))
    assert [i.qid for i in items] == ["wqs8"] and "without answers left out" in notes[0]


def test_qa_cap_zero_and_encoders_are_one_line(tmp_path):
    root = write_qa_data(tmp_path)
    with pytest.raises(KnowcompError) as err:
        get_probe("webqs").run(tiny_with_tokenizer(), RunOptions(data_dir=root, max_new_tokens=0))
    assert "must be at least 1; got 0" in str(err.value)
    bert = build_tiny("bert")
    with pytest.raises(KnowcompError) as err:
        get_probe("webqs").run(bert, RunOptions(data_dir=root, limit=2))
    assert "generation probes score continuations with a decoder" in str(err.value)


def tiny_with_tokenizer() -> LoadedModel:
    """Tiny Llama with a word-level tokenizer whose ids fit its 120-token vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "<eos>", "Question", ":", "?", "Answer", ".", ",", "What", "is", "item",
             "who", "person", "Thing"] + [str(i) for i in range(20)]  # fmt: skip
    vocab = {w: i for i, w in enumerate(words)} | {f"w{i}": i for i in range(len(words), 120)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                        eos_token="<eos>", pad_token="<eos>")  # fmt: skip
    loaded = build_tiny("llama")
    return LoadedModel(loaded.model, tokenizer, loaded.family, loaded.name, loaded.spec)


def test_generate_texts_matches_the_token_engine():
    loaded = tiny_with_tokenizer()
    prompts = ["Question : What is item 3 ?", "who is person 12", "", "Answer :"]
    rule = StopRule(max_new_tokens=5)
    got = generate_texts(loaded, prompts, rule)
    ids = [loaded.tokenizer(p)["input_ids"] or [1] for p in prompts]  # empty -> end-of-text
    for prompt_ids, generation in zip(ids, got, strict=True):
        ref = greedy_reference(loaded.model, prompt_ids, 5)
        assert list(generation.tokens) == ref[: len(generation.tokens)]


# -- LAMA generate mode ----------------------------------------------------------------------


def test_lama_generation_metrics_micro_and_macro():
    records = [
        {"relation": "P1", "matched": True, "capped": False},
        {"relation": "P1", "matched": False, "capped": True},
        {"relation": "P2", "matched": True, "capped": False},
        {"relation": "P2", "skipped": "no_slot"},
    ]
    assert generation_metrics(records) == pytest.approx(
        {"exact_match_micro": 2 / 3, "exact_match_macro": 0.75, "capped": 1 / 3}
    )


def test_lama_generate_mode_on_a_user_cloze_task(tmp_path, monkeypatch):
    from knowcomp.probes.lama import generated

    rows = [{"country": c, "capital": k} for c, k in
            [("France", "Paris"), ("Peru", "Lima"), ("Chile", "Santiago de Chile")]]  # fmt: skip
    (tmp_path / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "capitals.yaml").write_text(
        "type: cloze\nname: capitals\nfile: capitals.jsonl\nsubject: country\n"
        'object: capital\ntemplate: "The capital of [X] is [Y] , a city ."\n'
    )
    seen = {}

    def fake(loaded, prompts, rule, *, extra_stops, **_kwargs):
        seen["prompts"], seen["extra"] = prompts, extra_stops
        texts = [" Paris", " lima.", " Santiago de Chile"]
        return [Generation((1,), t, "stop") for t in texts]

    monkeypatch.setattr(generated, "generate_texts", fake)
    probe = get_probe(str(tmp_path / "capitals.yaml"))
    loaded = LoadedModel(None, None, Family.DECODER, "m", "x")
    result = probe.run(loaded, RunOptions(lama_mode="generate"))
    assert seen["prompts"][0] == "The capital of France is"
    assert seen["extra"][0] == ()  # the text after the slot starts with a stop (",")
    assert [r["matched"] for r in result.records] == [True, True, True]
    assert result.metrics["exact_match_micro"] == 1.0 and result.counts["scored"] == 3
    assert categories.headline_metric(result) == "exact_match_micro"
    with pytest.raises(KnowcompError, match="LAMA probes in generate mode score continuations"):
        probe.run(build_tiny("bert"), RunOptions(lama_mode="generate"))


# -- categories ------------------------------------------------------------------------------


def result(probe: str, category: str, **metrics: float) -> ProbeResult:
    return ProbeResult(probe=probe, category=category, metrics=metrics, counts={})


def test_headline_metric_per_probe():
    arc = result("arc-easy", "w", acc=0.4, acc_norm=0.5)
    assert categories.headline_metric(arc) == "acc"  # both studies report acc
    assert categories.headline_metric(arc, choice_metric="acc_norm") == "acc_norm"
    assert categories.headline_metric(result("boolq", "r", acc=0.4, acc_norm=0.5)) == "acc"
    assert categories.headline_metric(result("lambada", "l", acc=0.2, perplexity=40.0)) == "acc"
    assert categories.headline_metric(result("triviaqa", "w", exact_match=0.1, capped=0.0)) == (
        "exact_match"
    )
    lama = result("lama-trex", "w", **{"p@1_micro": 0.06, "p@1_macro": 0.05})
    assert categories.headline_metric(lama) == "p@1_micro"
    nan = result("lama-squad", "w", **{"p@1_micro": float("nan")})
    assert categories.headline_score(nan) is None
    assert categories.headline_metric(result("my-task", "w", acc=0.3, acc_norm=0.2)) == "acc"
    lambada = result("lambada", "l", acc=0.2, perplexity=40.0)
    assert categories.headline_metric(lambada, choice_metric="acc_norm") == "acc"  # has no norm
    with pytest.raises(KnowcompError, match="unknown choice metric 'f1'; choose from acc, acc_n"):
        categories.headline_metric(arc, choice_metric="f1")


def test_every_registered_probe_has_a_known_category():
    from knowcomp.probes.registry import PROBES, load_builtin_probes

    load_builtin_probes()
    assert {"triviaqa", "webqs", "sciq"} <= set(PROBES)
    for name, cls in PROBES.items():
        assert cls.category in categories.CATEGORIES, name
    assert all(categories.category_of(t) for t in categories.STUDY_TASKS)


def test_study_layout_shows_missing_probes_as_none_never_zero():
    results = [
        result("arc-easy", "world_knowledge", acc=0.5, acc_norm=0.6),
        result("triviaqa", "world_knowledge", exact_match=0.2),
        result("piqa", "common_reasoning", acc=0.6, acc_norm=0.7),
        result("lambada", "language_understanding", acc=0.3),
        result("boolq", "reading_comprehension", acc=0.6),  # not one of the nine
    ]
    layout = categories.study_layout(results)
    scores = dict(layout.tasks)
    assert list(scores) == list(categories.STUDY_TASKS)
    assert scores["arc-easy"] == 0.5 and scores["arc-challenge"] is None
    assert scores["webqs"] is None and "boolq" not in scores
    world, common, language = layout.categories
    assert world.short_name == "World" and world.score == pytest.approx(0.35)
    assert world.present == ("arc-easy", "triviaqa") and not world.complete
    assert set(world.missing) == {"arc-challenge", "sciq", "webqs"}
    assert common.score == pytest.approx(0.6) and common.complete
    assert language.score == pytest.approx(0.3)
    assert layout.overall == pytest.approx((0.5 + 0.2 + 0.6 + 0.3) / 4)
    headings = [h for h, _ in layout.columns()]
    assert headings[-4:] == ["World", "Common", "Language", "Average"]
    assert layout.metrics == {"arc-easy": "acc", "triviaqa": "exact_match",
                              "piqa": "acc", "lambada": "acc"}  # fmt: skip
    normed = categories.study_layout(results, choice_metric="acc_norm")
    assert dict(normed.tasks)["arc-easy"] == 0.6 and normed.metrics["piqa"] == "acc_norm"
    assert normed.metrics["lambada"] == "acc"
    empty = categories.study_layout([])
    assert empty.overall is None and all(c.score is None for c in empty.categories)


def test_layout_from_a_score_mapping_and_unknown_probes():
    layout = categories.study_layout({"piqa": 0.7, "hellaswag": None, "winogrande": 0.5})
    assert dict(layout.tasks)["hellaswag"] is None
    assert layout.categories[2].score == pytest.approx(0.5)
    with pytest.raises(KnowcompError, match="unknown probe 'mystery'"):
        categories.study_layout({"mystery": 0.1}, tasks=["mystery"])
    with_boolq = categories.study_layout(
        {"boolq": 0.6}, tasks=(*categories.STUDY_TASKS, "boolq"), categories=categories.CATEGORIES
    )
    assert with_boolq.categories[-1].short_name == "Reading"
    assert with_boolq.categories[-1].score == 0.6


def test_category_averages_of_a_run():
    layout = categories.category_averages([
        result("lama-trex", "world_knowledge", **{"p@1_micro": 0.1}),
        result("piqa", "common_reasoning", acc=0.7, acc_norm=0.6),
        result("webqs", "world_knowledge", exact_match=0.3),
    ])  # fmt: skip
    assert [probe for probe, _ in layout.tasks] == ["lama-trex", "webqs", "piqa"]
    assert [c.category for c in layout.categories] == ["world_knowledge", "common_reasoning"]
    assert layout.categories[0].score == pytest.approx(0.2)
    assert layout.overall == pytest.approx((0.1 + 0.3 + 0.7) / 3)


# -- the eval command ------------------------------------------------------------------------

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def tiny_folder(tmp_path):
    from tests.test_models import _save_tiny_with_tokenizer

    folder = tmp_path / "tiny-llama"
    _save_tiny_with_tokenizer(build_tiny("llama"), folder)
    return folder


def run_cli(*args: str):
    from click.testing import CliRunner

    from knowcomp.cli.main import cli

    return CliRunner().invoke(cli, list(args))


@pytest.mark.integration
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_eval_prints_exact_match_capped_and_categories(tiny_folder, tmp_path):
    out = tmp_path / "results.json"
    result = run_cli("eval", str(tiny_folder), "--probes", "triviaqa,webqs,sciq,lama-squad",
                     "--limit", "3", "--max-new-tokens", "2", "--lama-mode", "generate",
                     "--data-dir", str(SHARED_DATA), "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in ("EM", "capped", "EM micro", "By category", "World knowledge", "Overall",
                 "Headline [95%]"):  # fmt: skip
        assert text in result.output
    assert re.search(r"exact_match 0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]", result.output)
    payload = {r["probe"]: r for r in json.loads(out.read_text())["results"]}
    assert payload["triviaqa"]["options"]["max_new_tokens"] == 2
    assert payload["lama-squad"]["options"]["mode"] == "generate"
    assert {"exact_match", "capped"} <= set(payload["webqs"]["metrics"])
    assert "majority" not in payload["sciq"]["metrics"]


def test_eval_cap_zero_is_one_line_before_loading(tiny_folder):
    result = run_cli("eval", str(tiny_folder), "--probes", "triviaqa", "--max-new-tokens", "0")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: the generation cap (max new tokens) must be at least 1; got 0"
    )


def test_user_task_categories_are_checked(tmp_path):
    (tmp_path / "items.jsonl").write_text('{"q": "Q?", "c": ["a", "b"], "g": 0}\n')
    spec = "name: t\nfile: items.jsonl\nquery: q\nchoices: c\ngold: g\n"
    (tmp_path / "ok.yaml").write_text(spec)
    (tmp_path / "typo.yaml").write_text(spec + "category: worldknowledge\n")
    assert get_probe(str(tmp_path / "ok.yaml")).category == "custom"
    with pytest.raises(KnowcompError) as err:
        get_probe(str(tmp_path / "typo.yaml"))
    assert "unknown category 'worldknowledge'" in str(err.value) and "\n" not in str(err.value)
    layout = categories.category_averages([
        result("t", "custom", acc=0.5), result("piqa", "common_reasoning", acc_norm=0.6)
    ])  # fmt: skip
    assert [c.name for c in layout.categories] == ["Common reasoning", "Custom (user tasks)"]
