"""knowcomp on encoder-decoders against lm-evaluation-harness's seq2seq backend, item by item.

Tiny random T5 and BART models, each with a real tokenizer of its family trained on the texts
scored (`seq2seq_tokenizers.py`), are scored by knowcomp's probes and by lm-eval's
`HFLM(backend="seq2seq")` on the very same model object (through `lmeval_bridge.hflm`):

- every multiple-choice task (BoolQ, PIQA, WinoGrande, ARC, SciQ, HellaSwag, a user task with
  an empty context and a context ending in spaces) and LAMBADA, written as lm-eval tasks with
  the strings knowcomp scores (`write_choice_task`): the same picks, every log-likelihood within
  1e-4, the same greedy flag for LAMBADA;
- TriviaQA and WebQuestions as lm-eval `generate_until` tasks: the same answer text and
  exact-match decision.

The models' windows are short (128 tokens), so that long contexts (BoolQ passages) are cut; for
the open-answer tasks their weights are scaled up (`talker`), so that the random models' greedy
answers differ from prompt to prompt instead of repeating one token. lm-eval caps an
encoder-decoder's answer at `len(prompt) + max_gen_toks` tokens and applies BART's forced
`</s>` at its cap; the generation tasks set `max_length` = cap + 1 (the decoder start token and
the cap) and the model's `forced_eos_token_id` is cleared for lm-eval, so that capped answers
are compared too (see `generate_seq2seq.py`). lm-eval generates at batch size 1: it left-pads
batched prompts, which moves BART's absolute positions (knowcomp right-pads, the same as one
prompt alone).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.lmeval_bridge import (
    generation_task_config,
    hflm,
    sample_picks,
    write_choice_task,
)
from knowcomp.probes.mc.choice import ChoiceItem
from knowcomp.probes.mc.custom import register_task_file
from knowcomp.probes.qa.probes import TRIVIAQA_STOPS
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take
from tests.seq2seq_tokenizers import bart_tokenizer, t5_tokenizer, tiny_seq2seq

pytestmark = [
    pytest.mark.lmeval,
    pytest.mark.skipif(
        importlib.util.find_spec("lm_eval") is None,
        reason='lm-eval not installed (pip install "lm-eval==0.4.*")',
    ),
]

# Items per task: every task and layout is covered, and the file stays within seconds per model
# on a quiet 2-core machine.
CHOICE_SIZES = {"boolq": 2, "piqa": 2, "winogrande": 3, "arc-easy": 2, "arc-challenge": 1,
                "sciq": 1, "hellaswag": 1}  # fmt: skip
LAMBADA_SIZE = 3
QA_SIZES = {"triviaqa": 4, "webqs": 4}
CAP = 10  # new tokens per answer
WINDOW = 128  # tokens the encoder reads
TOLERANCE = 1e-4  # per-choice log-likelihood, nats
CUSTOM_ROWS = [
    {"question": "", "options": ["Paris, of course", "no"], "answer": 0},
    {"question": "The passage says   ", "options": ["yes", "no", "Paris"], "answer": 2},
    {"question": "Question: is it true?\nAnswer:", "options": ["yes", "no"], "answer": "no"},
]


def task_name(probe: str) -> str:
    return "kc_" + probe.replace("-", "_")


@pytest.fixture(scope="module")
def custom_task(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("custom")
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CUSTOM_ROWS))
    spec = {"name": "kc-custom", "file": "rows.jsonl", "query": "question",
            "choices": "options", "gold": "answer"}  # fmt: skip
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    return folder / "task.yaml"


@pytest.fixture(scope="module")
def chosen(custom_task) -> dict[str, list[Any]]:
    """Each probe's items as knowcomp's `--limit n --seed 0` takes them."""
    items = {p: take(get_probe(p).items(RunOptions())[0], n, 0) for p, n in CHOICE_SIZES.items()}
    items["kc-custom"] = register_task_file(custom_task).items(RunOptions())[0]
    lambada = take(get_probe("lambada")._items(RunOptions())[0], LAMBADA_SIZE, 0)
    items["lambada"] = [
        ChoiceItem(index=i, pairs=((r.context, " " + r.continuation),), gold=0, lengths=(1,))
        for i, r in lambada
    ]
    for probe, n in QA_SIZES.items():
        items[probe] = take(get_probe(probe).items(RunOptions())[0], n, 0)
    return items


def _texts(chosen: dict[str, list[Any]]) -> list[str]:
    texts = []
    for probe, items in chosen.items():
        if probe in QA_SIZES:
            texts += [item.prompt + " " + item.answers[0] for item in items]
        else:
            texts += [context + cont for item in items for context, cont in item.pairs]
    return texts


@pytest.fixture(scope="module", params=["t5", "bart"])
def model(request, chosen) -> LoadedModel:
    """A tiny model with a tokenizer of its family trained on the scored texts."""
    if request.param == "t5":
        tokenizer = t5_tokenizer(_texts(chosen))
        tokenizer.model_max_length = WINDOW  # T5 configs state no window: lm-eval reads this
        loaded = tiny_seq2seq("t5", tokenizer, seed=4)  # a seed whose answers both stop and cap
    else:
        loaded = tiny_seq2seq("bart", bart_tokenizer(_texts(chosen)),
                              max_position_embeddings=WINDOW)  # fmt: skip
    return loaded


@pytest.fixture(scope="module")
def talker(model) -> LoadedModel:
    """`model` with its weight matrices scaled up (tenfold for T5, thirtyfold for BART), for the
    open-answer tasks: the tiny random model's greedy answers then vary from prompt to prompt,
    some ending before the cap and some not (its log-likelihoods grow to thousands of nats, too
    large to compare to 1e-4 in float32, so the choice tasks use `model`)."""
    loaded = copy.deepcopy(model)
    scale = 10 if loaded.model.config.model_type == "t5" else 30
    with torch.no_grad():
        for weight in loaded.model.parameters():
            if weight.dim() == 2:
                weight.mul_(scale)
    return loaded


@pytest.fixture(scope="module")
def knowcomp_records(model, talker, custom_task) -> dict[str, list[dict[str, Any]]]:
    records = {}
    for probe, n in {**CHOICE_SIZES, "lambada": LAMBADA_SIZE}.items():
        records[probe] = get_probe(probe).run(model, RunOptions(limit=n, seed=0)).records
    records["kc-custom"] = register_task_file(custom_task).run(model, RunOptions()).records
    for probe, n in QA_SIZES.items():
        options = RunOptions(limit=n, seed=0, max_new_tokens=CAP)
        records[probe] = get_probe(probe).run(talker, options).records
    return records


@pytest.fixture(scope="module")
def lmeval_samples(
    model, talker, chosen, knowcomp_records, tmp_path_factory
) -> dict[str, list[dict]]:
    """lm-eval's logged samples per task, sorted by document."""
    import lm_eval
    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lmeval_seq2seq")
    choice_tasks = [p for p in chosen if p not in QA_SIZES]
    for probe in choice_tasks:
        write_choice_task(folder, task_name(probe), chosen[probe])
    for probe in QA_SIZES:
        data = folder / f"{task_name(probe)}.jsonl"
        data.write_text("".join(json.dumps({"prompt": i.prompt, "answers": list(i.answers)})
                                + "\n" for i in chosen[probe]))  # fmt: skip
        config = generation_task_config(task_name(probe), data, until=TRIVIAQA_STOPS,
                                        max_gen_toks=CAP)  # fmt: skip
        config["generation_kwargs"]["max_length"] = CAP + 1  # the start token and CAP new ones
        (folder / f"{task_name(probe)}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    samples = {}
    talker.model.generation_config.forced_eos_token_id = None  # knowcomp applies no such rule
    with pytest.MonkeyPatch.context() as patch:  # lm-eval's `pip list` and `nvidia-smi` calls
        patch.setattr(lm_eval.evaluator, "add_env_info", lambda _results: None)
        for loaded, tasks, batch_size in ((model, choice_tasks, 8), (talker, list(QA_SIZES), 1)):
            out = lm_eval.simple_evaluate(
                model=hflm(loaded, batch_size=batch_size), tasks=[task_name(p) for p in tasks],
                log_samples=True, bootstrap_iters=0, task_manager=manager,
            )  # fmt: skip
            samples |= out["samples"]
    return {name: sorted(s, key=lambda s: s["doc_id"]) for name, s in samples.items()}


@pytest.mark.integration
@pytest.mark.parametrize("probe", [*CHOICE_SIZES, "kc-custom"])
def test_choices_score_as_lm_evals_seq2seq_backend(
    probe, model, chosen, knowcomp_records, lmeval_samples
):
    items, records = chosen[probe], knowcomp_records[probe]
    samples = lmeval_samples[task_name(probe)]
    assert len(items) == len(records) == len(samples) > 0
    for item, record, sample in zip(items, records, samples, strict=True):
        assert [tuple(a) for a in sample["arguments"]] == list(item.pairs)
        lls, pick, pick_norm = sample_picks(sample)
        where = f"{model.name} {probe} item {item.index}: {record['loglikelihoods']} vs {lls}"
        assert record["loglikelihoods"] == pytest.approx(lls, abs=TOLERANCE), where
        assert (record["chosen"], record["chosen_norm"]) == (pick, pick_norm), where
        assert sample["acc"] == float(record["chosen"] == item.gold)


def test_lambada_scores_as_lm_evals_seq2seq_backend(model, knowcomp_records, lmeval_samples):
    records, samples = knowcomp_records["lambada"], lmeval_samples[task_name("lambada")]
    assert len(records) == len(samples) == LAMBADA_SIZE
    for record, sample in zip(records, samples, strict=True):
        ((loglikelihood, greedy),) = sample["filtered_resps"]
        assert record["loglikelihood"] == pytest.approx(float(loglikelihood), abs=TOLERANCE)
        assert record["greedy"] == bool(greedy)


def test_open_answers_are_lm_evals_seq2seq_answers(model, knowcomp_records, lmeval_samples):
    finishes = set()
    for probe in QA_SIZES:
        records, samples = knowcomp_records[probe], lmeval_samples[task_name(probe)]
        assert len(records) == len(samples) == QA_SIZES[probe]
        for record, sample in zip(records, samples, strict=True):
            (answer,) = sample["filtered_resps"]  # cut at `until` and stripped, as knowcomp's
            where = f"{model.name} {probe} doc {sample['doc_id']}"
            assert record["prediction"] == answer, where
            assert float(record["matched"]) == sample["exact_match"], where
            finishes.add(record["capped"])
    assert finishes == {True, False}  # both stopped and capped answers were compared
