"""The first study's tables as *The Cost of Compression* (Namburi et al., 2023) prints them.

- Table 1 (`namburi2023-table1`): the spread over seeds. Per model and compression that ran
  with several seeds: one row per seed, then the mean, the sample standard deviation (n - 1)
  and the population standard deviation (n); columns the probes.
- Table 3 (`namburi2023-table3`): the parameters of each module group, one row per model of
  the study: all parameters, then Overall, Attention, Feed-forward and the final layer, each
  as a count and as a share of all parameters (the layout `knowcomp modules` prints for one
  model, `modules.table`). The counts are those the study stored: `params_model` and, per
  group, `params_compressed` of a trial whose recipe compressed that group alone, so a group
  no trial compressed is `–` (`knowcomp modules MODEL` counts every group of one model).
- Tables 4-6 (`namburi2023-table4` to `-table6`): one table per model family, in the paper's
  order (encoder-only, encoder-decoder, decoder-only). Rows are model x dataset; columns the
  uncompressed baseline, then global quantization (GQ) of Overall, Att and FF, then prune-then-
  quantize (GPQ) at 20% and at 40% of the same three groups (any other pruning level gets its
  own columns). A group is shown under the paper's name: `overall` is Overall,
  `all_linear` (or `overall` pruned then `all_linear` quantized, the study's Overall_GPQ)
  Overall+final, `attention_qkv` Att (QKV), `feed_forward_with_attn_out` FF (+attn out).

Every cell is the same number the rest of the report shows for that model, compression and
probe (`Arm.score`, `baseline_score`): a mean ± SD over seeds, or one seed's score with its 95%
interval over items. Only what ran is shown; a table without data is not written.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from knowcomp.report.frame import Frame
from knowcomp.report.stats import Arm, Cell, baseline_score, cell, estimate_cell
from knowcomp.report.table import Table

PAPER = "namburi2023"
CITATION = "The Cost of Compression (Namburi et al., 2023)"
# the paper's family order (its abstract: "ENCODER, ENCODER-DECODER, and DECODER")
FAMILY_TABLES = {"encoder": 4, "encoder-decoder": 5, "decoder": 6}
FAMILY_NAMES = {"encoder": "encoder-only models", "decoder": "decoder-only models",
                "encoder-decoder": "encoder-decoder models"}  # fmt: skip
# group as stored (`Compression.group`) -> (rank among the paper's three columns, its label)
PAPER_GROUPS: dict[str, tuple[int, str]] = {
    "overall": (0, "Overall"),
    "all_linear": (0, "Overall+final"),
    "overall → all_linear": (0, "Overall+final"),
    "attention": (1, "Att"),
    "attention_qkv": (1, "Att (QKV)"),
    "feed_forward": (2, "FF"),
    "feed_forward_with_attn_out": (2, "FF (+attn out)"),
}
UNITS = (
    "Headline score in percent (P@1 micro for LAMA, accuracy for multiple choice, or acc_norm "
    "when the report was asked for it): mean ± SD over seeds, or one seed's score [95% "
    "interval over items]. GQ: dynamic (or other) quantization of the group; GPQ p%: the group "
    "pruned p% (L1), then quantized. Overall+final: every linear layer, the final one included "
    "(the study's Overall_GQ / Overall_GPQ); Overall: every linear layer but the final one."
)


_SEED_NOTE = (
    "Headline score in percent per seed (with its 95% interval over items), then over seeds: "
    "the mean, the sample SD (n - 1) and the population SD (n). Only compressions, and "
    "baselines, that ran with more than one seed."
)


@dataclass(frozen=True)
class Column:
    """One value column of Tables 4-6: a stage (GQ, or GPQ at a level) and a group."""

    level: float | None  # None: GQ; else the GPQ pruning level
    rank: int
    group: str
    method: str

    def label(self, with_method: bool) -> str:
        stage = "GQ" if self.level is None else f"GPQ {round(100 * self.level)}%"
        name = PAPER_GROUPS.get(self.group, (3, self.group))[1]
        return f"{stage} {name}" + (f" [{self.method}]" if with_method else "")


def paper_tables(frame: Frame, all_arms: list[Arm]) -> list[Table]:
    """Tables 1, 3 and 4-6 (the families that ran), in the paper's numbering."""
    return [seed_table(frame, all_arms), parameter_table(frame), *family_tables(frame, all_arms)]


# Table 3's groups: the paper's four, then the study's variants where a recipe compressed them
TABLE3_GROUPS = (("overall", "Overall"), ("attention", "Attention"),
                 ("feed_forward", "Feed-forward"), ("final_layer", "Final layer"),
                 ("all_linear", "Overall+final"), ("attention_qkv", "Att (QKV)"),
                 ("feed_forward_with_attn_out", "FF (+attn out)"))  # fmt: skip
_TABLE3_NOTE = (
    "Parameters of each module group, and their share of all the model's parameters (%), as "
    "the study counted them: all parameters once each (a tied head counted once); a group's "
    "count is the weights of its linear layers that a trial compressing that group alone "
    "touched. – : no trial compressed that group alone (`knowcomp modules MODEL` counts every "
    "group). Overall: every linear layer but the final one; Overall+final: all of them."
)


def parameter_table(frame: Frame) -> Table:
    """Table 3: parameters per module group, one row per model (from the stored counts)."""
    shown = [(g, label) for i, (g, label) in enumerate(TABLE3_GROUPS)
             if i < 4 or any(g in found for found in frame.params.values())]  # fmt: skip
    columns = ["Parameters"]
    for _, label in shown:
        columns += [label, f"{label} (%)"]
    table = Table(f"{PAPER}-table3", f"{CITATION}, Table 3: parameters per module group",
                  ["Model", "Family"], columns, note=_TABLE3_NOTE)  # fmt: skip
    order = list(FAMILY_TABLES)  # the paper's family order, then the store's model order
    models = sorted(frame.models, key=lambda m: order.index(frame.families.get(m, ""))
                    if frame.families.get(m) in order else len(order))  # fmt: skip
    if not any(g in found for found in frame.params.values() for g, _ in TABLE3_GROUPS):
        return table  # no group was compressed alone: nothing the study counted to show
    for model in models:
        found = frame.params.get(model, {})
        total = found.get("model")
        if total is None:
            continue
        cells: list[Cell | str | None] = [str(total)]
        for group, _ in shown:
            count = found.get(group)
            cells += [None, None] if count is None else [str(count), f"{100 * count / total:.2f}"]
        table.rows.append(([model, frame.families.get(model, "unknown")], cells))
    return table


def _column(arm: Arm) -> Column | None:
    c = arm.compression
    if c.kind == "quant":
        level = None
    elif c.kind == "prune+quant" and c.level is not None:
        level = c.level
    else:
        return None
    return Column(level, PAPER_GROUPS.get(c.group, (3, c.group))[0], c.group, c.method)


def family_tables(frame: Frame, all_arms: list[Arm]) -> list[Table]:
    """Tables 4-6: one per model family, rows model x dataset, columns Baseline, GQ, GPQ."""
    tables = []
    families = list(FAMILY_TABLES) + sorted(set(frame.families.values()) - set(FAMILY_TABLES))
    for family in families:
        models = [m for m in frame.models if frame.families.get(m) == family]
        if not models:
            continue
        arms_by_column: dict[Column, dict[str, Arm]] = {}
        for arm in all_arms:
            column = _column(arm) if arm.model in models else None
            if column is not None:
                arms_by_column.setdefault(column, {})[arm.model] = arm
        if not arms_by_column:  # no GQ or GPQ: the baseline table says all there is
            continue
        columns = sorted(arms_by_column, key=lambda c: (c.level or 0.0, c.level is not None,
                                                        c.rank, c.group, c.method))  # fmt: skip
        methods = {(c.level, c.group): set() for c in columns}
        for c in columns:
            methods[(c.level, c.group)].add(c.method)
        labels = [c.label(len(methods[(c.level, c.group)]) > 1) for c in columns]
        number = FAMILY_TABLES.get(family)
        name = f"{PAPER}-table{number}" if number else f"{PAPER}-table-{family}"
        title = (
            f"{CITATION}, Table {number}: " if number else f"{CITATION}, layout of Tables 4-6: "
        ) + f"{FAMILY_NAMES.get(family, family)}, baseline, GQ and GPQ"
        table = Table(name, title, ["Model", "Dataset"], ["Baseline", *labels], note=UNITS)
        for model in models:
            for probe in frame.probes:
                cells: list[Cell | str | None] = [baseline_score(frame, model, probe)]
                for c in columns:
                    arm = arms_by_column[c].get(model)
                    cells.append(None if arm is None else arm.score(probe))
                if any(x is not None for x in cells):
                    table.rows.append(([model, probe], cells))
        tables.append(table)
    return tables


def seed_table(frame: Frame, all_arms: list[Arm]) -> Table:
    """Table 1: per seed, then mean, sample SD and population SD, for what ran with several."""
    table = Table(f"{PAPER}-table1", f"{CITATION}, Table 1: scores per seed, their mean and "
                  "standard deviation", ["Model", "Compression", "Seed"], list(frame.probes),
                  note=_SEED_NOTE)  # fmt: skip
    for model in frame.models:
        baselines = [b for b in frame.baselines if b.model == model]
        seeds = sorted({b.seed for b in baselines})
        if len(seeds) > 1:
            per_seed = {(b.seed, b.probe): b for b in baselines}
            _seed_rows(table, frame, model, "baseline", seeds, per_seed)
        for arm in all_arms:
            if arm.model == model and len(arm.seeds) > 1:
                per_seed = {(p.seed, p.probe): p for p in arm.points}
                _seed_rows(table, frame, model, arm.recipe, arm.seeds, per_seed)
    return table


def _seed_rows(table: Table, frame: Frame, model: str, compression: str, seeds: list[int],
               per_seed: dict) -> None:  # fmt: skip
    values: dict[str, list[float]] = {probe: [] for probe in frame.probes}
    for seed in seeds:
        cells: list[Cell | str | None] = []
        for probe in frame.probes:
            point = per_seed.get((seed, probe))
            if point is None:
                cells.append(None)
                continue
            values[probe].append(100 * point.value)
            one = estimate_cell(point.score_ci, 100) if point.score_ci is not None else None
            cells.append(one or cell([100 * point.value]))
        table.rows.append(([model, compression, str(seed)], cells))
    summaries = (("mean", statistics.fmean, 1), ("SD (sample)", statistics.stdev, 2),
                 ("SD (population)", statistics.pstdev, 2))  # fmt: skip
    for label, summary, needed in summaries:
        cells = [Cell(summary(v), 0.0, 1) if len(v) >= needed else None for v in values.values()]
        table.rows.append(([model, compression, label], cells))
