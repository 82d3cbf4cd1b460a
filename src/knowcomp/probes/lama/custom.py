"""User cloze probes: a JSONL file of subject / object (/ template) and a few lines of YAML.

```yaml
type: cloze                      # a LAMA-style probe (the default type is multiple_choice)
name: capitals                   # the probe's name in tables and results
file: capitals.jsonl             # one JSON object a line; relative to this YAML file
subject: country                 # field holding the subject ([X])
object: capital                  # field holding the object ([Y]) to predict
template: "The capital of [X] is [Y] ."   # one template for all lines, or
# template_field: template       # a field holding each line's own template
relation: relation               # optional field grouping lines into relations (macro average)
category: world_knowledge        # optional (default: world_knowledge)
```

The probe runs like the built-in LAMA probes: every family, P@1 / P@10 / MRR, macro and micro,
next-token or candidate ranking (candidates are the objects of each relation in the file).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from knowcomp.errors import KnowcompError
from knowcomp.probes.base import Probe, RunOptions
from knowcomp.probes.categories import check_category
from knowcomp.probes.lama.items import SLOT, ClozeItem, Relations
from knowcomp.probes.lama.probes import LamaProbe

KEYS = {"type", "name", "file", "subject", "object", "template", "template_field", "relation",
        "category", "summary"}  # fmt: skip


def _fail(path: Path, problem: str, fix: str) -> KnowcompError:
    return KnowcompError(f"task file {path}: {problem}; fix: {fix}")


class CustomCloze(LamaProbe):
    """A cloze probe over a user's JSONL file; built by `cloze_probe_from_spec`."""

    category = "world_knowledge"
    spec: dict[str, Any]
    file: Path
    path: Path

    def _relations(self, options: RunOptions) -> Relations:
        from knowcomp.data.readers import read_text

        out: Relations = defaultdict(list)
        text = read_text(self.file, f"data file of task file {self.path}")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out[self._relation(line)].append(self._item(line, number))
            except (ValueError, KeyError) as err:
                if options.skip_malformed:
                    continue
                problem = f"no field {err.args[0]!r}" if isinstance(err, KeyError) else err
                raise KnowcompError(
                    f"{self.file}, line {number}: {problem} (task file {self.path}); fix the "
                    "line, or pass --skip-malformed"
                ) from None
        if not out:
            raise KnowcompError(f"task file {self.path}: {self.file} has no facts")
        return dict(out)

    def _row(self, line: str) -> dict[str, Any]:
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
        return row

    def _relation(self, line: str) -> str:
        field = self.spec.get("relation")
        return str(self._row(line)[field]) if field else self.name

    def _item(self, line: str, number: int) -> ClozeItem:
        row = self._row(line)
        template = (
            row[self.spec["template_field"]]
            if "template_field" in self.spec
            else (self.spec["template"])
        )
        if SLOT not in template or "[X]" not in template:
            raise ValueError(f"template {template!r} needs [X] and [Y]")
        subject, obj = str(row[self.spec["subject"]]), str(row[self.spec["object"]])
        return ClozeItem(self._relation(line), str(number), subject, obj,
                         template.replace("[X]", subject))  # fmt: skip


def cloze_probe_from_spec(path: Path, spec: dict[str, Any]) -> Probe:
    """A ready-to-run cloze probe from a parsed task YAML (`type: cloze`)."""
    unknown = sorted(set(spec) - KEYS, key=str)
    if unknown:
        raise _fail(path, f"unknown key {unknown[0]!r}", f"use only {', '.join(sorted(KEYS))}")
    for key in ("name", "file", "subject", "object"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise _fail(path, f"missing key {key!r}", f"add `{key}: ...`")
    if ("template" in spec) == ("template_field" in spec):
        raise _fail(path, "give exactly one of template / template_field",
                    "e.g. template: \"[X] was born in [Y] .\"")  # fmt: skip
    if "template" in spec and (SLOT not in spec["template"] or "[X]" not in spec["template"]):
        raise _fail(path, "the template needs [X] and [Y]", 'e.g. "[X] was born in [Y] ."')
    if problem := check_category(spec.get("category", "world_knowledge")):
        raise _fail(path, problem, "set `category:` to one of those")
    data = path.parent / Path(spec["file"]).expanduser()
    if not data.is_file():
        raise _fail(path, f"data file {data} does not exist", "point `file:` at the JSONL file")
    attrs = {
        "name": spec["name"],
        "category": spec.get("category", "world_knowledge"),
        "dataset": str(data),
        "summary": spec.get("summary", f"user cloze probe from {path.name}"),
        "spec": spec,
        "file": data,
        "path": path,
    }
    return type(f"CustomCloze[{spec['name']}]", (CustomCloze,), attrs)()
