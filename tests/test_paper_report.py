"""The papers' tables and figures, from small synthetic results stores (real SQLite files written
through `ResultsStore`): names, layout, and numbers equal to the report's other cells."""

from __future__ import annotations

import csv
import statistics

import pytest

from knowcomp.report.paper_tables import family_tables, seed_table
from knowcomp.report.stats import arms, baseline_score
from knowcomp.report.table import to_csv, to_latex, to_markdown
from knowcomp.report.tables import build_tables
from tests.test_report import _frame, full_store


@pytest.fixture
def store_path(tmp_path):
    return full_store(tmp_path / "study.sqlite")


def test_tables_4_to_6_are_one_table_per_family_rows_model_by_dataset(store_path):
    tables = {t.name: t for t in build_tables(_frame(store_path))}
    table = tables["namburi2023-table6"]  # the synthetic store's models are decoders
    assert "Table 6" in table.title and "decoder-only" in table.title
    assert table.labels == ["Model", "Dataset"]
    assert table.probes == ["Baseline", "GQ Att", "GQ FF", "GPQ 20% Overall", "GPQ 40% Overall"]
    text = to_markdown(table)
    # the numbers the transposed tables showed before: Att 48/79 over seeds 0 and 1, ...
    assert "| m1 | lama-trex | 50.0 ± 0.0 | 48.0 ± 1.4 | 40.0 ± 0.0 | 45.0 | 30.0 |" in text
    assert "| m1 | piqa | 80.0 ± 0.0 | 79.0 ± 1.4 | 70.0 ± 0.0 | 75.0 | 75.0 |" in text
    assert "| m1 | winogrande | 60.0 ± 0.0 | – | – | – | – |" in text
    assert "| m2 | lama-trex | 30.0 | – | – | – | – |" in text
    assert not any(labels == ["m2", "piqa"] for labels, _ in table.rows)  # no data at all
    rows = list(csv.reader(to_csv(table).splitlines()))
    assert rows[0][:6] == ["Model", "Dataset", "Baseline", "Baseline std", "Baseline n", "GQ Att"]
    assert rows[1][:8] == ["m1", "lama-trex", "50", "0", "2", "48", "1.41421", "2"]
    assert r"\begin{tabular}{llrrrrr}" in to_latex(table)
    assert "namburi2023-table4" not in tables and "namburi2023-table5" not in tables


def test_every_cell_is_the_reports_own_number(store_path):
    """A cell of Tables 4-6 is exactly `Arm.score` / `baseline_score`, as the tables before."""
    frame = _frame(store_path)
    (table,) = family_tables(frame, arms(frame))
    found = {(a.model, a.recipe): a for a in arms(frame)}
    columns = {
        "GQ Att": "quant:dynamic_int8:attention",
        "GQ FF": "quant:dynamic_int8:feed_forward",
        "GPQ 20% Overall": "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:overall",
        "GPQ 40% Overall": "prune:l1_unstructured:overall:0.4,quant:dynamic_int8:overall",
    }
    checked = 0
    for (model, probe), cells in table.rows:
        assert cells[0] == baseline_score(frame, model, probe)
        for label, value in zip(table.probes[1:], cells[1:], strict=True):
            arm = found.get((model, columns[label]))
            assert value == (None if arm is None else arm.score(probe))
            checked += value is not None
    assert checked == 8


def _families_store(path):
    from knowcomp.store import ResultsStore
    from tests.test_report import _outcome, _quant

    with ResultsStore(path) as store:
        for model, family in (("enc", "encoder"), ("t5", "encoder-decoder"), ("dec", "decoder")):
            for seed in (40, 50, 60):
                base = _outcome(model, None, [], seed, {"lama-trex": 0.5 + seed / 1000})
                base.trial["family"] = family
                store.write(base)
            for group in ("all_linear", "attention_qkv", "feed_forward_with_attn_out"):
                steps = _quant(group)
                for seed in (40, 50, 60):
                    value = {"all_linear": 0.2, "attention_qkv": 0.45}.get(group, 0.3) + seed / 1e4
                    out = _outcome(model, f"quant:dynamic_int8:{group}", steps, seed,
                                   {"lama-trex": value})  # fmt: skip
                    out.trial["family"] = family
                    store.write(out)
    return path


def test_tables_are_numbered_by_family_and_name_the_studys_groups(tmp_path):
    frame = _frame(_families_store(tmp_path / "f.sqlite"))
    tables = {t.name: t for t in family_tables(frame, arms(frame))}
    assert list(tables) == ["namburi2023-table4", "namburi2023-table5", "namburi2023-table6"]
    assert [labels[0] for labels, _ in tables["namburi2023-table5"].rows] == ["t5"]
    assert tables["namburi2023-table4"].probes == [
        "Baseline", "GQ Overall+final", "GQ Att (QKV)", "GQ FF (+attn out)"]  # fmt: skip


def test_table_1_has_a_row_per_seed_then_mean_and_both_standard_deviations(tmp_path):
    frame = _frame(_families_store(tmp_path / "f.sqlite"))
    table = seed_table(frame, arms(frame))
    assert table.name == "namburi2023-table1" and "Table 1" in table.title
    mine = [(labels, cells) for labels, cells in table.rows
            if labels[:2] == ["enc", "quant:dynamic_int8:all_linear"]]  # fmt: skip
    assert [labels[2] for labels, _ in mine] == [
        "40", "50", "60", "mean", "SD (sample)", "SD (population)"]  # fmt: skip
    values = [100 * (0.2 + s / 1e4) for s in (40, 50, 60)]
    got = [cells[0].mean for _, cells in mine]
    assert got[:3] == pytest.approx(values)
    assert got[3] == pytest.approx(statistics.fmean(values))
    assert got[4] == pytest.approx(statistics.stdev(values))  # 0.1
    assert got[5] == pytest.approx(statistics.pstdev(values))
    # the mean and sample SD are those of the mean ± SD cell of Tables 4-6
    arm = next(a for a in arms(frame) if a.model == "enc" and a.recipe.endswith("all_linear"))
    assert (arm.score("lama-trex").mean, arm.score("lama-trex").std) == pytest.approx(got[3:5])
    text = to_markdown(table)
    assert "| enc | baseline | 40 | 54.0 |" in text
    assert "| enc | quant:dynamic_int8:all_linear | SD (population) | 0.1 |" in text
