"""User multiple-choice tasks: a JSONL file and a few lines of YAML that name its fields.

```yaml
name: capitals                # the probe's name in tables and results
file: capitals.jsonl          # one JSON object a line; relative to this YAML file
query: question               # field holding the context, e.g. "Question: ...\\nAnswer:"
choices: options              # field holding the list of answer texts
gold: answer                  # field holding the right answer: its index, or its text
category: world_knowledge     # optional (default: custom)
delimiter: " "                # optional, put between context and each choice (default " ")
summary: Capitals of countries  # optional
```

Each choice is scored as `delimiter + choice` after the query, exactly as the built-in tasks
score theirs (see `requests.py`), with the same `acc`, `acc_norm` and `majority` metrics. Pass
the YAML file wherever a probe name goes: `knowcomp eval MODEL --probes piqa,./capitals.yaml`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from knowcomp.errors import KnowcompError
from knowcomp.probes.base import Probe, RunOptions
from knowcomp.probes.categories import check_category
from knowcomp.probes.mc.choice import ChoiceItem, ChoiceProbe

REQUIRED = {
    "name": "the probe's name",
    "file": "the JSONL file, relative to the YAML file",
    "query": "the JSONL field that holds the context",
    "choices": "the JSONL field that holds the list of choices",
    "gold": "the JSONL field that holds the right choice (index or text)",
}
OPTIONAL = {"category": "custom", "delimiter": " ", "summary": "", "type": "multiple_choice"}


class CustomTask(ChoiceProbe):
    """A multiple-choice task read from a user's JSONL file; built by `register_task_file`."""

    category = "custom"
    file: Path
    spec: Path
    fields: dict[str, str]
    delimiter: str

    def items(self, options: RunOptions) -> tuple[list[ChoiceItem], list[str]]:
        from knowcomp.data.readers import read_text

        lines = read_text(self.file, f"data file of task file {self.spec}").split("\n")
        items: list[ChoiceItem] = []
        skipped: list[str] = []
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                items.append(self._item(len(items), line))
            except ValueError as err:
                if not options.skip_malformed:
                    raise KnowcompError(
                        f"{self.file}, line {line_no}: {err} (task file {self.spec}); fix "
                        "the line, or pass --skip-malformed to skip such lines"
                    ) from None
                skipped.append(f"line {line_no}: {err}")
        notes = [f"{len(skipped)} malformed line(s) skipped ({skipped[0]})"] if skipped else []
        return items, notes

    def _item(self, index: int, line: str) -> ChoiceItem:
        """One JSONL line as an item; ValueError says what is wrong with it."""
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
        query, choices, gold = (self._field(row, key) for key in ("query", "choices", "gold"))
        if not isinstance(query, str):
            raise ValueError(f"field {self.fields['query']!r} is not a string")
        if not (isinstance(choices, list) and len(choices) >= 2):
            raise ValueError(f"field {self.fields['choices']!r} is not a list of 2+ choices")
        if not all(isinstance(c, str) and c for c in choices):
            raise ValueError(f"field {self.fields['choices']!r} holds a non-text or empty choice")
        if isinstance(gold, str):
            if gold not in choices:
                raise ValueError(f"gold {gold!r} is not one of the choices")
            gold = choices.index(gold)
        if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise ValueError(
                f"gold {gold!r} is neither a choice nor an index 0..{len(choices) - 1}"
            )
        return ChoiceItem.shared_context(index, query, choices, gold, self.delimiter)

    def _field(self, row: dict[str, Any], key: str) -> Any:
        name = self.fields[key]
        if name not in row:
            raise ValueError(f"no field {name!r} (the task's {key!r} field)")
        return row[name]


def _fail(path: Path, problem: str, fix: str) -> KnowcompError:
    return KnowcompError(f"task file {path}: {problem}; fix: {fix}")


def register_task_file(path: str | Path) -> Probe:
    """A ready-to-run multiple-choice probe from a task YAML file (see the module docstring).

    The probe is returned, not added to the built-in registry: its data lives outside the
    data directory, so `knowcomp probes` could not check it. Problems with the YAML itself are
    one-line `KnowcompError`s naming the file and the fix; problems with data lines surface
    when the probe reads them (`count` or `run`).
    """
    path = Path(path).expanduser()
    example = "name: mytask, file: data.jsonl, query: question, choices: options, gold: answer"
    from knowcomp.data.readers import load_yaml, read_text

    if not path.is_file():
        raise _fail(path, "no such file", "check the path to the task YAML")
    spec = load_yaml(read_text(path, "task file"), f"task file {path}")
    if not isinstance(spec, dict):
        raise _fail(path, "not a YAML mapping", f"write a mapping such as {{{example}}}")
    if spec.get("type") == "cloze":
        from knowcomp.probes.lama.custom import cloze_probe_from_spec

        return cloze_probe_from_spec(path, spec)
    if spec.get("type", "multiple_choice") != "multiple_choice":
        raise _fail(path, f"unknown type {spec['type']!r}", "use multiple_choice or cloze")
    unknown = sorted(set(spec) - set(REQUIRED) - set(OPTIONAL), key=str)
    if unknown:
        raise _fail(
            path, f"unknown key {unknown[0]!r}",
            f"use only {', '.join([*REQUIRED, *OPTIONAL])}",
        )  # fmt: skip
    for key, what in REQUIRED.items():
        if key not in spec:
            raise _fail(path, f"missing key {key!r}", f"add `{key}: ...` naming {what}")
    values = {**OPTIONAL, **spec}
    for key, value in values.items():
        if not isinstance(value, str) or (key in REQUIRED and not value.strip()):
            raise _fail(path, f"{key!r} must be text", f"give {key} a (quoted) string value")
    if problem := check_category(values["category"]):
        raise _fail(path, problem, "set `category:` to one of those")
    if "," in values["name"]:
        raise _fail(path, "the name holds a comma", "probe lists are comma-separated: drop it")
    data = path.parent / Path(values["file"]).expanduser()  # an absolute path stays as is
    if not data.is_file():
        raise _fail(path, f"data file {data} does not exist", "point `file:` at the JSONL file")
    attrs = {
        "name": values["name"],
        "category": values["category"],
        "dataset": str(data),
        "summary": values["summary"] or f"user task from {path.name}",
        "file": data,
        "spec": path,
        "fields": {key: values[key] for key in ("query", "choices", "gold")},
        "delimiter": values["delimiter"],
    }
    return type(f"CustomTask[{values['name']}]", (CustomTask,), attrs)()
