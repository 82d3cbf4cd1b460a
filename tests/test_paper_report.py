"""The papers' tables and figures, from small synthetic results stores (real SQLite files written
through `ResultsStore`): names, layout, and numbers equal to the report's other cells."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from knowcomp.report.namburi_figures import method_labels
from knowcomp.report.paper_tables import family_tables, parameter_table, seed_table
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


# -- figures ---------------------------------------------------------------------------------------
def _plots(store, folder):
    from knowcomp.report import generate_report

    result = generate_report(store, folder)
    return {p.name: p for p in result.plots}, {t.name: t for t in result.tables}


def _values(plot, panel=None):
    return {(v["series"], v["x"]): v for v in plot.values if panel is None or v["panel"] == panel}


@pytest.mark.integration
def test_the_first_studys_figures_plot_the_tables_numbers(store_path, tmp_path):
    plots, tables = _plots(store_path, tmp_path / "out")
    named = sorted(n for n in plots if n.startswith("namburi2023"))
    assert named == [f"namburi2023-fig{n}" for n in (10, 11, 15, 16, 17, 18, 28, 5, 6, 7)]
    for name in named:
        for path in (plots[name].png, plots[name].svg, plots[name].csv):
            assert path.is_file() and path.parent == tmp_path / "out" / "plots"
        assert (tmp_path / "out" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    table = {tuple(labels): cells for labels, cells in tables["namburi2023-table6"].rows}
    columns = tables["namburi2023-table6"].probes

    def table_drop(probe, column):  # baseline minus compressed, from Table 6's cells
        cells = table[("m1", probe)]
        return cells[0].mean - cells[columns.index(column)].mean

    fig15 = _values(plots["namburi2023-fig15"])  # GQ per dataset, LAMA
    assert fig15[("Att", "GQ")]["y"] == pytest.approx(table_drop("lama-trex", "GQ Att"))
    assert fig15[("FF", "GQ")]["y"] == pytest.approx(table_drop("lama-trex", "GQ FF"))
    assert fig15[("Att", "GQ")]["sd"] == pytest.approx(2**0.5)  # seeds 0 and 1: drops 1 and 3
    fig18 = _values(plots["namburi2023-fig18"])  # GPQ per dataset, the other tasks
    assert fig18[("Overall", 20.0)]["y"] == pytest.approx(table_drop("piqa", "GPQ 20% Overall"))
    assert fig18[("Overall", 40.0)]["y"] == pytest.approx(table_drop("piqa", "GPQ 40% Overall"))
    # averaged over the probes of a kind: Fig. 6 (GQ) and Fig. 5 (global pruning, decoders)
    fig6 = _values(plots["namburi2023-fig6"], "decoder mc")
    assert fig6[("Att", "GQ")]["y"] == pytest.approx(table_drop("piqa", "GQ Att"))
    fig5 = _values(plots["namburi2023-fig5"], "lama")
    assert [fig5[("Overall", x)]["y"] for x in (20.0, 40.0, 60.0, 80.0)] == pytest.approx(
        [5, 10, 30, 40])  # fmt: skip
    # the final layer per dataset (Fig. 28, decoders), as the drops table shows it
    drops = {(labels[1], labels[2]): cells for labels, cells in tables["drops"].rows}
    fig28 = _values(plots["namburi2023-fig28"], "piqa")
    structured = drops[("prune:ln_structured:final_layer:0.4", "0")][1].mean
    assert fig28[("structured (ln_structured)", 40.0)]["y"] == pytest.approx(structured) == 10
    # Fig. 10 (decoders): the same final-layer trials, the drop averaged over a kind's probes
    fig10 = _values(plots["namburi2023-fig10"], "mc")
    assert fig10[("structured (ln_structured)", 40.0)]["y"] == pytest.approx(structured)
    assert fig10[("unstructured (l1_unstructured)", 20.0)]["y"] == pytest.approx(
        drops[("prune:l1_unstructured:final_layer:0.2", "0")][1].mean)  # fmt: skip
    # Fig. 11: against the share of parameters compressed (attention: 200 of 1000 weights)
    fig11 = _values(plots["namburi2023-fig11"], "decoder lama")
    pruned = drops[("prune:l1_unstructured:attention:0.4", "0")][0].mean
    assert fig11[("prune Att", 8.0)]["y"] == pytest.approx(pruned)  # 40% of 20% zeroed
    quantized = table_drop("lama-trex", "GQ Att")
    assert fig11[("quant Att", 20.0)]["y"] == pytest.approx(quantized)  # the whole group
    written = list(csv.DictReader(plots["namburi2023-fig11"].csv.open()))
    assert len(written) == len(plots["namburi2023-fig11"].values) > 10
    written = list(csv.DictReader(plots["namburi2023-fig28"].csv.open()))
    assert len(written) == len(plots["namburi2023-fig28"].values) == 8
    page = (tmp_path / "out" / "report.html").read_text()
    assert "namburi2023-fig6" in page and "Fig. 6" in page


def test_table_3_counts_each_group_from_the_stored_trials(store_path, tmp_path):
    """One row per model; a group's count is `params_compressed` of a trial that compressed it
    alone (the synthetic store: 1000 parameters, attention 200, feed-forward 600, ...)."""
    from tests.test_report import GROUP_PARAMS, PARAMS_MODEL

    frame = _frame(store_path)
    tables = {t.name: t for t in build_tables(frame)}
    table = tables["namburi2023-table3"]
    assert "Table 3" in table.title and table.labels == ["Model", "Family"]
    assert table.probes[:3] == ["Parameters", "Overall", "Overall (%)"]
    rows = {labels[0]: dict(zip(table.probes, cells, strict=True)) for labels, cells in table.rows}
    assert list(rows) == ["m1", "m2"]
    for group, label in (
        ("overall", "Overall"),
        ("attention", "Attention"),
        ("feed_forward", "Feed-forward"),
        ("final_layer", "Final layer"),
    ):
        assert rows["m1"][label] == str(GROUP_PARAMS[group])
        assert float(rows["m1"][f"{label} (%)"]) == pytest.approx(
            100 * GROUP_PARAMS[group] / PARAMS_MODEL)  # fmt: skip
    assert rows["m2"]["Parameters"] == "1000" and rows["m2"]["Attention"] is None  # ran nothing
    assert "Overall+final" not in table.probes  # no trial compressed all_linear alone
    written = tmp_path / "t"
    from knowcomp.report.table import write_tables

    paths = write_tables([table], written)
    assert sorted(p.name for p in paths) == [
        "namburi2023-table3.csv", "namburi2023-table3.md", "namburi2023-table3.tex"]  # fmt: skip
    rows_csv = list(csv.reader((written / "namburi2023-table3.csv").open()))
    assert rows_csv[1][:5] == ["m1", "decoder", "1000", "800", "80.00"]
    assert rows_csv[2][3] == ""  # missing, never 0


def test_table_3_shows_the_studys_own_groups_where_they_ran(tmp_path):
    from knowcomp.store import ResultsStore
    from tests.test_report import _outcome, _quant

    counts = {"all_linear": 900, "attention_qkv": 150}
    with ResultsStore(tmp_path / "g.sqlite") as store:
        for model, family in (("dec", "decoder"), ("enc", "encoder")):  # stored out of order
            outcomes = [_outcome(model, None, [], 0, {"lama-trex": 0.5})]
            for group, count in counts.items():
                out = _outcome(model, f"quant:dynamic_int8:{group}", _quant(group), 0,
                               {"lama-trex": 0.4})  # fmt: skip
                out.trial["params_compressed"] = count
                outcomes.append(out)
            for out in outcomes:
                out.trial["family"] = family
                store.write(out)
    table = parameter_table(_frame(tmp_path / "g.sqlite"))
    assert [labels for labels, _ in table.rows] == [["enc", "encoder"], ["dec", "decoder"]]
    rows = {labels[0]: dict(zip(table.probes, cells, strict=True)) for labels, cells in table.rows}
    assert rows["enc"]["Overall+final"] == "900" and rows["enc"]["Att (QKV) (%)"] == "15.00"
    assert rows["enc"]["Overall"] is None and "FF (+attn out)" not in table.probes


def _pooled_store(path):
    from knowcomp.store import ResultsStore
    from tests.test_report import _outcome, _quant

    with ResultsStore(path) as store:
        for model, family, lost in (("a", "decoder", 0.02), ("b", "decoder", 0.06),
                                    ("e", "encoder", 0.10)):  # fmt: skip
            base = _outcome(model, None, [], 0, {"lama-trex": 0.5})
            quant = _outcome(model, "quant:dynamic_int8:attention", _quant("attention"), 0,
                             {"lama-trex": 0.5 - lost})  # fmt: skip
            for outcome in (base, quant):
                outcome.trial["family"] = family
                store.write(outcome)
    return path


@pytest.mark.integration
def test_figures_pool_a_familys_models(tmp_path):
    plots, _ = _plots(_pooled_store(tmp_path / "p.sqlite"), tmp_path / "out")
    fig6 = plots["namburi2023-fig6"]
    decoders = _values(fig6, "decoder lama")[("Att", "GQ")]
    assert decoders["y"] == pytest.approx(4.0)  # models a and b: drops 2 and 6
    assert decoders["sd"] == pytest.approx(statistics.stdev([2.0, 6.0])) and decoders["n"] == 2
    encoders = _values(fig6, "encoder lama")[("Att", "GQ")]
    assert encoders["y"] == pytest.approx(10.0) and encoders["n"] == 1
    assert [v["panel"] for v in fig6.values] == ["encoder lama", "decoder lama"]  # paper order


HOANG_TASKS = {"arc-easy": "world_knowledge", "piqa": "common_reasoning",
               "winogrande": "language_understanding"}  # fmt: skip
HOANG_SCORES = {  # (arc-easy, piqa, winogrande)
    None: (0.70, 0.80, 0.60),
    "quant:gptq:overall:bits=3": (0.60, 0.70, 0.55),
    "quant:gptq:overall:bits=4": (0.68, 0.78, 0.59),
    "prune:sparsegpt:overall:0.5": (0.62, 0.72, 0.56),
}
HOANG_RECOVERED = {  # on gptq 3-bit: method -> (trainable parameters, scores)
    "lora": (1000, (0.65, 0.75, 0.57)),
    "idp:tokens=5+5": (30, (0.63, 0.72, 0.56)),
    "idp:tokens=10+10": (60, (0.64, 0.74, 0.57)),
}


def _hoang_store(path, pruned_recovered: bool = False):
    from knowcomp.store import ResultsStore, TrialOutcome
    from tests.test_report import _items

    def outcome(recipe, scores, recovery=None):
        steps = []
        if recipe and recipe.startswith("quant"):
            steps = [{"kind": "quant", "method": "gptq", "group": "overall",
                      "bits": int(recipe[-1])}]  # fmt: skip
        elif recipe:
            steps = [{"kind": "prune", "method": "sparsegpt", "group": "overall", "level": 0.5}]
        key = f"{recipe}|{(recovery or {}).get('label')}"
        trial = {"trial_key": key, "study": "hoang", "spec_hash": "h", "model": "m",
                 "family": "decoder", "sweep": "s", "recipe": recipe, "seed": 0,
                 "limit_items": 400, "lama_mode": "next-token", "dtype": "float32",
                 "params_model": 100_000, "recovery": recovery,
                 "compression": {"steps": steps} if recipe else None}  # fmt: skip
        results = [{"probe": probe, "category": category,
                    "metrics": {"acc": value, "acc_norm": value, "majority": 0.5},
                    "counts": {}, "records": _items("piqa", value)}
                   for (probe, category), value in zip(HOANG_TASKS.items(), scores,
                                                       strict=True)]  # fmt: skip
        return TrialOutcome(trial, results)

    with ResultsStore(path) as store:
        for recipe, scores in HOANG_SCORES.items():
            store.write(outcome(recipe, scores))
        for method, (params, scores) in HOANG_RECOVERED.items():
            recovery = {"method": method.split(":")[0], "label": method, "settings": "",
                        "trainable_params": params, "log": {}}  # fmt: skip
            store.write(outcome("quant:gptq:overall:bits=3", scores, recovery))
        if pruned_recovered:
            recovery = {"method": "lora", "label": "lora", "settings": "", "log": {},
                        "trainable_params": 1000}  # fmt: skip
            store.write(outcome("prune:sparsegpt:overall:0.5", (0.66, 0.74, 0.58), recovery))
    return path


@pytest.mark.integration
def test_the_second_studys_figures_plot_the_tables_numbers(tmp_path):
    plots, tables = _plots(_hoang_store(tmp_path / "h.sqlite"), tmp_path / "out")
    assert sorted(n for n in plots if n.startswith("hoang2024")) == [
        "hoang2024-fig1", "hoang2024-fig4", "hoang2024-fig6", "hoang2024-fig7"]  # fmt: skip
    recovery = {tuple(labels[1:]): dict(zip(tables["recovery"].probes, cells, strict=True))
                for labels, cells in tables["recovery"].rows}  # fmt: skip
    gptq3 = "quant:gptq:overall:bits=3"
    fig1 = _values(plots["hoang2024-fig1"])
    plain = recovery[(gptq3, "–")]["Average"].mean
    assert fig1[("gptq overall", 3.0)]["y"] == pytest.approx(plain)
    four = 100 * statistics.fmean((0.68, 0.78, 0.59))
    assert fig1[("gptq overall", 4.0)]["y"] == pytest.approx(four)
    sparse = 100 * statistics.fmean((0.62, 0.72, 0.56))
    assert fig1[("sparsegpt overall", 50.0)]["y"] == pytest.approx(sparse)
    assert fig1[("uncompressed", "")]["y"] == pytest.approx(70.0)
    one = fig1[("gptq overall", 3.0)]
    assert one["low"] < one["y"] < one["high"]  # one seed: the stratified bootstrap's interval
    fig4 = _values(plots["hoang2024-fig4"])
    for method, (params, _) in HOANG_RECOVERED.items():
        point = fig4[(method, float(params))]
        assert point["y"] == pytest.approx(recovery[(gptq3, method)]["Average"].mean)
    fig6 = _values(plots["hoang2024-fig6"])
    assert sorted(x for series, x in fig6 if series == "idp") == [10.0, 20.0]
    assert fig6[("idp", 20.0)]["y"] == pytest.approx(fig4[("idp:tokens=10+10", 60.0)]["y"])
    fig7 = _values(plots["hoang2024-fig7"])
    for task in HOANG_TASKS:
        gain = recovery[(gptq3, "lora")][task].mean - recovery[(gptq3, "–")][task].mean
        assert fig7[("lora", task)]["y"] == pytest.approx(gain)
        assert fig7[("lora", task)]["low"] < gain < fig7[("lora", task)]["high"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "hoang2024-fig7" in page
    # grouped by paper: the second study's tables and figures under its heading
    hoang = page.index("Do Compressed LLMs Forget Knowledge? (Hoang et al., ICML 2024)</h3>")
    assert page.index("<figure id='hoang2024-fig1'") > page.index("<h2 id='plots'>")
    assert page.index("id='recovery'") > hoang


# -- the second study's tables -------------------------------------------------------------------
ABLATION = {  # variant -> (arc-easy, piqa, winogrande), the IDP row the trial's own scores
    "prompt 1 alone (5 tokens)": (0.61, 0.71, 0.55),
    "prompt 2 alone (5 tokens)": (0.62, 0.70, 0.56),
    "concatenation (5+5 tokens)": (0.60, 0.69, 0.54),
    "IDP": HOANG_RECOVERED["idp:tokens=5+5"][1],
}


def _ablation_store(path):
    """The second study's store, its `idp:tokens=5+5` trial run with `ablation: true`, and
    a pruned compression recovered by LoRA."""
    import sqlite3

    from knowcomp.store import ResultsStore

    _hoang_store(path, pruned_recovered=True)
    with sqlite3.connect(path) as conn:  # the worker stores the variants in the trial's JSON
        key = "quant:gptq:overall:bits=3|idp:tokens=5+5"
        (text,) = conn.execute("SELECT recovery FROM trials WHERE trial_key = ?", (key,)).fetchone()
        recovery = json.loads(text)
        recovery["ablation"] = {
            variant: {task: {"acc": v, "acc_norm": v, "majority": 0.5}
                      for task, v in zip(HOANG_TASKS, values, strict=True)}
            for variant, values in ABLATION.items()}  # fmt: skip
        conn.execute("UPDATE trials SET recovery = ? WHERE trial_key = ?",
                     (json.dumps(recovery), key))  # fmt: skip
    with ResultsStore(path):
        pass
    return path


def test_the_second_studys_tables_1_to_3(tmp_path):
    frame = _frame(_ablation_store(tmp_path / "a.sqlite"))
    tables = {t.name: t for t in build_tables(frame)}
    recovery = {tuple(labels): cells for labels, cells in tables["recovery"].rows}
    one = tables["hoang2024-table1"]
    assert "Table 1" in one.title and one.probes[-1] == "Trainable params"
    assert [labels[1:] for labels, _ in one.rows] == [
        ["uncompressed", "–"], ["quant:gptq:overall:bits=3", "–"],
        ["quant:gptq:overall:bits=3", "lora"], ["quant:gptq:overall:bits=3", "idp:tokens=10+10"],
        ["quant:gptq:overall:bits=3", "idp:tokens=5+5"]]  # fmt: skip
    for labels, cells in one.rows:  # every score is the recovery table's own cell
        assert cells[:-1] == recovery[tuple(labels)]
    params = {labels[2]: cells[-1] for labels, cells in one.rows}
    assert params["lora"] == "1,000" and params["–"] is None
    two = tables["hoang2024-table2"]  # the pruned model, recovered by LoRA
    assert [labels[1:] for labels, _ in two.rows] == [
        ["uncompressed", "–"], ["prune:sparsegpt:overall:0.5", "–"],
        ["prune:sparsegpt:overall:0.5", "lora"]]  # fmt: skip
    for labels, cells in two.rows:
        assert cells[:-1] == recovery[tuple(labels)]
    three = tables["hoang2024-table3"]
    assert three.labels == ["Model", "Compression", "Method", "Variant"]
    assert [labels[3] for labels, _ in three.rows] == list(ABLATION)
    assert three.probes == [*HOANG_TASKS, "World", "Common", "Language", "Average"]
    rows = {labels[3]: cells for labels, cells in three.rows}
    for variant, values in ABLATION.items():
        assert [c.mean for c in rows[variant][:3]] == pytest.approx([100 * v for v in values])
        assert rows[variant][-1].mean == pytest.approx(100 * statistics.fmean(values))
    # IDP's row is the recovery table's row of the same trial
    idp = recovery[("m", "quant:gptq:overall:bits=3", "idp:tokens=5+5")]
    assert [c.mean for c in rows["IDP"][:3]] == pytest.approx([c.mean for c in idp[:3]])


def test_without_ablation_there_is_no_table_3(tmp_path):
    from knowcomp.report.hoang_tables import ablation_table

    frame = _frame(_hoang_store(tmp_path / "h.sqlite"))
    assert not ablation_table(frame).rows
    tables = {t.name for t in build_tables(frame)}
    assert "hoang2024-table1" in tables and "hoang2024-table3" not in tables
    assert "hoang2024-table2" not in tables  # no pruned model was recovered


def test_a_figure_names_each_method_by_what_differs_between_them():
    gptq = "gptq(act_order=False, bits={}, block_size=128, percdamp=0.01, symmetric=True)"
    assert method_labels([gptq.format(3), gptq.format(8)]) == {
        gptq.format(3): "gptq bits=3", gptq.format(8): "gptq bits=8"}  # fmt: skip
    assert method_labels(["dynamic_int8()", "gptq(bits=3, group_size=128)"]) == {
        "dynamic_int8()": "dynamic_int8", "gptq(bits=3, group_size=128)":
        "gptq bits=3 group_size=128"}  # fmt: skip
    # options whose values hold commas stay whole; names that cannot be told apart stay whole
    assert method_labels(["m(a=(1, 2), b=1)", "m(a=(1, 3), b=1)"]) == {
        "m(a=(1, 2), b=1)": "m a=(1, 2)", "m(a=(1, 3), b=1)": "m a=(1, 3)"}  # fmt: skip
    assert method_labels(["odd(", "odd(("]) == {"odd(": "odd(", "odd((": "odd(("}
