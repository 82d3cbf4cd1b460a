"""The second study's tables as *Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024)
prints them, from a study's recovered trials.

- Table 1 (`hoang2024-table1`): the quantized models (GPTQ in the paper) and their recovery;
  Table 2 (`hoang2024-table2`): the pruned ones (SparseGPT). Rows per model: the uncompressed
  model, the compressed model, then each recovery method; columns the study's nine tasks (those
  that ran), the World / Common / Language averages, the average, and each method's trainable
  parameters. Every score cell is the cell of the same row of the report's `recovery` table.
- Table 3 (`hoang2024-table3`): the IDP ablation: each constituent prompt alone, their naive
  concatenation, and IDP, on the same items and tasks, for every IDP trial a study ran with
  `recovery: {ablation: true}` (the variants' scores are stored with the trial).

The paper's text was not at hand when these were written: the split of Tables 1 and 2 by
compression kind (quantized, pruned) and Table 3's rows are knowcomp's reading of the paper
(its sec. 4 and its ablation of IDP), said so in the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knowcomp.report.frame import Frame
from knowcomp.report.recovery import _categories, _cells, _layouts, _tasks
from knowcomp.report.table import Table

PAPER = "hoang2024"
CITATION = "Do Compressed LLMs Forget Knowledge? (Hoang et al., 2024)"
KIND_TABLES = (("quant", 1, "quantized models"), ("prune", 2, "pruned models"))
PARAMS = "Trainable params"


def hoang_tables(frame: Frame, recovery: list[Table]) -> list[Table]:
    """Tables 1 and 2 from the report's recovery tables, and Table 3 where ablations ran."""
    found = {t.name: t for t in recovery}
    tables = []
    if "recovery" in found:
        kinds = {p.recipe: p.compression.kind for p in (*frame.points, *frame.recovered)}
        for kind, number, what in KIND_TABLES:
            tables.append(_kind_table(found["recovery"], found.get("recovery_training"), kinds,
                                      kind, number, what))  # fmt: skip
    tables.append(ablation_table(frame))
    return [t for t in tables if t.rows]


def _kind_table(main: Table, training: Table | None, kinds: dict[str, str], kind: str,
                number: int, what: str) -> Table:  # fmt: skip
    params = {}
    if training is not None:
        index = training.probes.index(PARAMS)
        params = {tuple(labels[:3]): cells[index] for labels, cells in training.rows}
    table = Table(f"{PAPER}-table{number}", f"{CITATION}, Table {number}: {what}, compressed "
                  "and recovered", list(main.labels), [*main.probes, PARAMS],
                  note=main.note + " Trainable params: of the recovery method (the compressed "
                  "model stays frozen).")  # fmt: skip
    for model in dict.fromkeys(labels[0] for labels, _ in main.rows):
        rows = [(labels, cells) for labels, cells in main.rows
                if labels[0] == model and kinds.get(labels[1]) == kind]  # fmt: skip
        if not rows:
            continue
        uncompressed = next((r for r in main.rows if r[0][0] == model and r[0][1] ==
                             "uncompressed"), None)  # fmt: skip
        for labels, cells in ([uncompressed] if uncompressed else []) + rows:
            table.rows.append((labels, [*cells, params.get(tuple(labels))]))
    return table


@dataclass(frozen=True)
class _Score:
    """One variant's result on one probe, in the shape `recovery._layouts` reads."""

    seed: int
    probe: str
    metrics: dict[str, Any]


def ablation_table(frame: Frame) -> Table:
    """Table 3: per model, compression and IDP method, one row per variant (each prompt alone,
    their concatenation, IDP), columns the tasks, category averages and average; means over
    seeds."""
    trials: dict[str, Any] = {}
    for p in frame.recovered:
        if (p.recovery or {}).get("ablation"):
            trials.setdefault(p.trial_key, p)
    models = list(dict.fromkeys(p.model for p in trials.values()))
    tasks = _tasks(frame, models)
    known = {p.probe: p.category or "custom"
             for p in (*frame.baselines, *frame.points, *frame.recovered)}  # fmt: skip
    categories = _categories(known, tasks)
    from knowcomp.probes.categories import DISPLAY_NAMES, SHORT_NAMES

    averages = [SHORT_NAMES.get(c, DISPLAY_NAMES.get(c, c)) for c in categories]
    table = Table(f"{PAPER}-table3", f"{CITATION}, Table 3: IDP against its prompts alone and "
                  "their concatenation", ["Model", "Compression", "Method", "Variant"],
                  [*tasks, *averages, "Average"],
                  note=f"Headline score in percent ({frame.choice_metric} for multiple choice), "
                  "on the same items for every variant: each trained prompt attached alone (as "
                  "prompt tuning), the prompts concatenated into one (naive concatenation), and "
                  "IDP choosing one prompt per input; means over seeds.")  # fmt: skip
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for p in trials.values():
        groups.setdefault((p.model, p.recipe, str(p.method)), []).append(p)
    width = len(table.probes)
    for (model, recipe, method), members in groups.items():
        variants = list(dict.fromkeys(v for p in members for v in p.recovery["ablation"]))
        for variant in variants:
            scores = [
                _Score(p.seed, probe, metrics)
                for p in members
                for probe, metrics in (p.recovery["ablation"].get(variant) or {}).items()
                if probe in known
            ]
            layouts = _layouts(scores, tasks, categories, known, frame.choice_metric)
            table.rows.append(([model, recipe, method, variant], _cells(layouts, width)))
    return table
