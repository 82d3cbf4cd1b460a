"""Run lm-evaluation-harness tasks on a model knowcomp holds in memory, and hand knowcomp's own
multiple-choice items to lm-eval as task files.

knowcomp's probes reproduce lm-eval's scoring (`knowcomp.probes.mc`), but lm-eval has many more
tasks, and a reviewer may want lm-eval's own numbers. A compressed model lives only in memory
(quantized modules, pruned weights, an untied head), so saving it and reloading it by name is
slow and may not round-trip; `run_lm_eval` hands the very `nn.Module` to lm-eval's `HFLM`
instead, so lm-eval scores exactly what knowcomp compressed.

`write_choice_task` writes a list of `ChoiceItem`s as a JSONL file plus an lm-eval task YAML
that reads it back (`dataset_path: json`, `output_type: multiple_choice`), so that lm-eval
scores the very (context, continuation) strings knowcomp scores: the equivalence test and the
speed benchmark against lm-eval are built on it, and it makes any knowcomp task (built-in or a
user's YAML) runnable in lm-eval without lm-eval's own dataset download.

`write_generation_task` does the same for open-answer questions (TriviaQA, WebQuestions): the
very prompts and answers knowcomp's QA probes use, as an lm-eval `generate_until` task scored as
lm-eval's `triviaqa` is, for the generation equivalence test and benchmark.

lm-eval is optional (`pip install "lm-eval==0.4.*"`, also in knowcomp's `dev` extra); without
it, or for an encoder (which lm-eval cannot score), `run_lm_eval` raises a one-line
`KnowcompError`. Encoder-decoders run on lm-eval's seq2seq backend.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.inputs import check_bos_setting
from knowcomp.probes.mc.choice import ChoiceItem, argmax

DELIMITER = " "  # lm-eval's default target_delimiter; knowcomp's built-in tasks use it too


def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise KnowcompError(
            'lm-evaluation-harness is not installed; install it with pip install "lm-eval==0.4.*" '
            '(or pip install -e ".[dev]")'
        ) from None
    return lm_eval


BACKENDS = {Family.DECODER: "causal", Family.ENCODER_DECODER: "seq2seq"}  # HFLM's backends


def _backend(loaded: LoadedModel) -> str:
    """lm-eval's backend for `loaded`: causal for decoders, seq2seq for encoder-decoders."""
    if loaded.family not in BACKENDS:
        raise KnowcompError(
            f"the lm-eval bridge scores decoders and encoder-decoders only; {loaded.spec} is an "
            f"{loaded.family.value}"
        )
    return BACKENDS[loaded.family]


@contextmanager
def _ties_left_alone(model: nn.Module) -> Iterator[None]:
    """While active, `model.tie_weights()` does nothing.

    `HFLM` calls `tie_weights()` on the model it is given. knowcomp unties a tied LM head
    before compressing it; re-tying would silently replace the compressed head with the
    input embeddings, and lm-eval would score a different model from the one knowcomp holds.
    """
    model.tie_weights = lambda *_args, **_kwargs: None  # an instance attribute shadows it
    try:
        yield
    finally:
        del model.tie_weights


def hflm(loaded: LoadedModel, *, batch_size: int | str = 8, add_bos: str = "auto") -> Any:
    """lm-eval's `HFLM` around `loaded.model` itself (no copy, no reload), with the backend of
    its family (`causal` or `seq2seq`).

    `add_bos` is knowcomp's setting (`probes.inputs`): `auto` leaves lm-eval's default (the
    tokenizer's own special tokens), `true`/`false` set its `add_bos_token`.

    `HFLM` gives a tokenizer without a pad token a new one; it gets a copy of such a tokenizer,
    so that knowcomp's own stays as it was (a new pad id would lie outside the model's
    embedding table).
    """
    _lm_eval()
    backend = _backend(loaded)
    from lm_eval.models.huggingface import HFLM

    tokenizer = loaded.tokenizer
    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer = copy.deepcopy(tokenizer)
    with _ties_left_alone(loaded.model):
        lm = HFLM(
            pretrained=loaded.model, tokenizer=tokenizer, backend=backend, batch_size=batch_size
        )
    lm.add_bos_token = {"auto": None, "true": True, "false": False}[check_bos_setting(add_bos)]
    return lm


def run_lm_eval(
    loaded: LoadedModel,
    tasks: Sequence[str | dict[str, Any]],
    *,
    limit: int | None = None,
    batch_size: int | str = 8,
    include_path: str | Path | Sequence[str | Path] | None = None,
    include_defaults: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run lm-eval `tasks` on `loaded` (possibly compressed) and return lm-eval's result dict.

    - `tasks`: lm-eval task or group names, task YAML paths, or inline task configs;
    - `limit`: the first `limit` documents of each task (lm-eval's `--limit`);
    - `batch_size`: lm-eval's batch size (an int, or `"auto"`);
    - `include_path`: folder(s) of extra task YAMLs (lm-eval's `--include_path`);
      `include_defaults=False` skips indexing lm-eval's own tasks (several seconds), for runs
      of included tasks only;
    - every other keyword goes to `lm_eval.simple_evaluate` (`num_fewshot`, `log_samples`,
      `samples`, `bootstrap_iters`, `task_manager`, ...).

    The result has lm-eval's layout: `results[task]["acc,none"]` and so on, and with
    `log_samples` (lm-eval's default) `samples[task]`, one entry per document with its
    `arguments` (context, continuation) and `filtered_resps` (log-likelihood, greedy) per
    choice; `sample_picks` reads the picks from one.
    """
    lm_eval = _lm_eval()
    _backend(loaded)  # a one-line error before indexing lm-eval's tasks, which takes seconds
    from lm_eval.tasks import TaskManager

    if "task_manager" not in kwargs:
        paths = [include_path] if isinstance(include_path, str | Path) else include_path
        kwargs["task_manager"] = TaskManager(
            include_path=[str(p) for p in paths] if paths else None,
            include_defaults=include_defaults,
        )
    model = hflm(loaded, batch_size=batch_size)
    results = lm_eval.simple_evaluate(model=model, tasks=list(tasks), limit=limit, **kwargs)
    if results is None:  # only on a non-zero rank of a distributed run, never here
        raise KnowcompError("lm-eval returned no results")
    return results


# -- knowcomp items as lm-eval tasks ---------------------------------------------------------


def _rows(name: str, items: Sequence[ChoiceItem], delimiter: str) -> tuple[list[dict], bool]:
    """JSONL rows and whether the task has a context per choice (WinoGrande's layout)."""
    rows, layouts = [], set()
    for item in items:
        contexts = [context for context, _ in item.pairs]
        if not all(cont.startswith(delimiter) for _, cont in item.pairs):
            raise KnowcompError(
                f"task {name}: item {item.index} has a choice that does not start with the "
                f"delimiter {delimiter!r}; pass the delimiter its choices were built with"
            )
        conts = [cont[len(delimiter) :] for _, cont in item.pairs]
        if len(set(contexts)) == 1:
            layouts.add("shared context")
            rows.append({"context": contexts[0], "choices": conts, "gold": item.gold})
        elif len(set(conts)) == 1:
            layouts.add("context per choice")
            rows.append({"contexts": contexts, "continuation": conts[0], "gold": item.gold})
        else:
            raise KnowcompError(
                f"task {name}: item {item.index} has neither one context for all choices nor "
                "one continuation for all contexts, the two layouts lm-eval's multiple_choice "
                "tasks have"
            )
        if len(layouts) > 1:
            raise KnowcompError(
                f"task {name}: item {item.index} has a context per choice and an earlier item "
                "has one context for all; an lm-eval task has one layout, so split the items"
            )
    return rows, layouts == {"context per choice"}


def choice_task_config(
    name: str, data_file: str | Path, *, per_choice_context: bool, delimiter: str = DELIMITER
) -> dict[str, Any]:
    """An lm-eval multiple-choice task over a JSONL file written by `write_choice_task`.

    Each `doc_to_*` names a column, which lm-eval reads as it is (no template rendering, so no
    whitespace can change). With a context per choice, `doc_to_text` names the integer gold
    column: an integer there is lm-eval's sign for "the choices are the contexts".
    """
    if per_choice_context:
        fields = {"doc_to_text": "gold", "doc_to_choice": "contexts",
                  "doc_to_target": "continuation"}  # fmt: skip
    else:
        fields = {"doc_to_text": "context", "doc_to_choice": "choices", "doc_to_target": "gold"}
    metric = {"aggregation": "mean", "higher_is_better": True}
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        **fields,
        "target_delimiter": delimiter,
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", **metric}, {"metric": "acc_norm", **metric}],
    }


def write_choice_task(
    folder: str | Path, name: str, items: Sequence[ChoiceItem], *, delimiter: str = DELIMITER
) -> Path:
    """Write `items` as `folder/name.jsonl` and an lm-eval task `folder/name.yaml`; return the
    YAML's path. Document i of the lm-eval task is `items[i]`; pass `folder` as lm-eval's
    `include_path` and `name` as the task."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, per_choice = _rows(name, items, delimiter)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = choice_task_config(name, data.resolve(), per_choice_context=per_choice,
                                delimiter=delimiter)  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- open-answer questions as lm-eval generation tasks -----------------------------------------


def generation_task_config(
    name: str, data_file: str | Path, *, until: Sequence[str], max_gen_toks: int
) -> dict[str, Any]:
    """An lm-eval `generate_until` task over a JSONL file written by `write_generation_task`,
    scored as lm-eval's own `triviaqa` task: greedy, `until` the stop strings, the answer
    stripped (`remove_whitespace`), exact match against any answer ignoring case and
    punctuation. `prompt` and `answers` are columns, read as they are."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "prompt",
        "doc_to_target": "answers",
        "num_fewshot": 0,
        "generation_kwargs": {"until": list(until), "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": max_gen_toks},
        "filter_list": [{"name": "remove_whitespace", "filter": [
            {"function": "remove_whitespace"}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": True}],
    }  # fmt: skip


def write_generation_task(
    folder: str | Path,
    name: str,
    questions: Sequence[tuple[str, Sequence[str]]],
    *,
    until: Sequence[str],
    max_gen_toks: int,
) -> Path:
    """Write `(prompt, answers)` pairs as `folder/name.jsonl` and an lm-eval generation task
    `folder/name.yaml` (see `generation_task_config`); return the YAML's path. Document i is
    `questions[i]`."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (_prompt, answers) in enumerate(questions):
        if not answers:
            raise KnowcompError(f"task {name}: question {i} has no answers")
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answers": list(a)}) + "\n"
                            for p, a in questions))  # fmt: skip
    config = generation_task_config(name, data.resolve(), until=until, max_gen_toks=max_gen_toks)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def sample_picks(sample: dict[str, Any]) -> tuple[list[float], int, int]:
    """Log-likelihoods and the `acc` and `acc_norm` picks of one logged lm-eval sample of a
    `write_choice_task` task, picked as lm-eval picks them: the first maximum, per character of
    `doc_to_choice`'s strings for `acc_norm`."""
    lls = [float(ll) for ll, _greedy in sample["filtered_resps"]]
    doc = sample["doc"]
    choices = doc["contexts"] if "contexts" in doc else doc["choices"]
    normed = [ll / len(c) for ll, c in zip(lls, choices, strict=True)]
    return lls, argmax(lls), argmax(normed)
