"""Reports: tables, plots, html, forgetting and findings from stores with known numbers."""

from __future__ import annotations

import csv
import importlib.util
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.report import check_findings, generate_report, load_frame, write_report
from knowcomp.report.forgetting import find_forgetting
from knowcomp.report.plots import draw_plots
from knowcomp.report.stats import arms
from knowcomp.report.table import to_csv, to_latex, to_markdown
from knowcomp.report.tables import build_tables
from knowcomp.store import ResultsStore, TrialOutcome

VERSIONS = {"python": "3.11.7", "knowcomp": "0.1.0", "torch": "2.13.0+cpu"}
PARAMS_MODEL = 1000
GROUP_PARAMS = {"attention": 200, "feed_forward": 600, "overall": 800, "final_layer": 100}
BASE = {"lama-trex": 0.50, "piqa": 0.80, "winogrande": 0.60}
MAJORITY = {"piqa": 0.5, "winogrande": 0.55}
CATEGORY = {"lama-trex": "world_knowledge", "piqa": "common_reasoning",
            "winogrande": "language_understanding"}  # fmt: skip
HAS_CATEGORIES = importlib.util.find_spec("knowcomp.probes.categories") is not None
EXTRA = ["categories"] if HAS_CATEGORIES else []  # the category table, where it can be built

# Drops in points, (lama-trex, piqa) at levels 0.2, 0.4, 0.6, 0.8: the averaged drops are
# overall 5, 10, 25, 35; attention 1, 2, 8, 15; feed_forward 2, 4, 15, 25.
PRUNE_DROPS = {
    "overall": [(5, 5), (10, 10), (30, 20), (40, 30)],
    "attention": [(1, 1), (2, 2), (10, 6), (20, 10)],
    "feed_forward": [(2, 2), (4, 4), (20, 10), (30, 20)],
}
LEVELS = (0.2, 0.4, 0.6, 0.8)
# The final layer at 20% and 40%: unstructured averages 0.5, 2.5; structured 4.5, 12.5.
FINAL_DROPS = {
    "l1_unstructured": [(1, 0), (3, 2)],
    "ln_structured": [(5, 4), (15, 10)],
}


def _metrics(probe: str, value: float) -> dict:
    if probe.startswith("lama-"):
        return {"p@1_micro": value, "p@1_macro": value, "mrr_micro": value}
    return {"acc": value, "majority": MAJORITY[probe]}


def _outcome(
    model: str,
    recipe: str | None,
    steps: list[dict],
    seed: int,
    scores: dict[str, float],
    *,
    sweep: str = "s",
    records: dict[str, list[dict]] | None = None,
    measured: bool = False,
) -> TrialOutcome:
    level = next((s.get("level") for s in steps if s["kind"] == "prune"), None)
    group = steps[0]["group"] if steps else None
    compressed = GROUP_PARAMS.get(group, 0) if group else 0
    kinds = {s["kind"] for s in steps}
    sparsity = level if kinds == {"prune"} else (level or 0.0)
    trial = {
        "trial_key": f"{model}|{recipe}|{seed}", "study": "synthetic", "spec_hash": "h",
        "model": model, "family": "decoder", "sweep": "baseline" if recipe is None else sweep,
        "recipe": recipe, "level": level, "seed": seed, "limit_items": 10,
        "lama_mode": "next-token", "dtype": "float32", "sparsity": sparsity,
        "params_compressed": compressed, "params_linear": 900, "params_model": PARAMS_MODEL,
        "bytes_before": 4000, "bytes_after": 4000,
        "compression": None if recipe is None else {"recipe": recipe, "steps": steps},
        "versions": VERSIONS, "seconds": 1.0,
    }  # fmt: skip
    if measured:
        records = {probe: _items(probe, value) for probe, value in scores.items()}
    results = [
        {"probe": probe, "category": CATEGORY[probe], "metrics": _metrics(probe, value),
         "counts": {}, "notes": [], "seconds": 0.1, "records": (records or {}).get(probe)}
        for probe, value in scores.items()
    ]  # fmt: skip
    return TrialOutcome(trial, results)


ITEMS = 400  # items per probe in a measured store; scores are multiples of 1/400


def _items(probe: str, value: float) -> list[dict]:
    """Per-item records whose mean is `value`: item i right iff i < value * ITEMS, so a lower
    score loses items a higher one had (nested); LAMA facts in four relations."""
    right = round(value * ITEMS)
    assert right == pytest.approx(value * ITEMS), value
    if probe.startswith("lama-"):
        return [{"relation": f"P{i % 4}", "uuid": f"f{i}", "rank": 1 if i < right else 2,
                 "p@1": float(i < right)} for i in range(ITEMS)]  # fmt: skip
    return [{"index": i, "gold": 0, "chosen": 0 if i < right else 1} for i in range(ITEMS)]


def _prune(group: str, level: float, method: str = "l1_unstructured") -> list[dict]:
    return [{"kind": "prune", "method": method, "group": group, "level": level}]


def _quant(group: str) -> list[dict]:
    return [{"kind": "quant", "method": "dynamic_int8", "group": group}]


LAMA_BASE = [
    {"relation": "P1", "uuid": "u1", "subject": "a", "object": "A", "rank": 1, "prediction": "A",
     "p@1": 1.0},
    {"relation": "P1", "uuid": "u2", "subject": "b", "object": "B", "rank": 1, "prediction": "B",
     "p@1": 1.0},
    {"relation": "P2", "uuid": "u3", "subject": "c", "object": "C", "rank": 1, "prediction": "C",
     "p@1": 1.0},
    {"relation": "P2", "uuid": "u4", "subject": "d", "object": "D", "rank": 3, "prediction": "x",
     "p@1": 0.0},
    {"relation": "P3", "uuid": "u5", "subject": "e", "object": "E E", "rank": None,
     "prediction": "E", "p@1": 0.0},
]  # fmt: skip
LAMA_PRUNED = [
    {**LAMA_BASE[0], "rank": 2, "prediction": "y", "p@1": 0.0},  # forgotten
    LAMA_BASE[1],
    {**LAMA_BASE[2], "rank": 7, "prediction": "z", "p@1": 0.0},  # forgotten
    {**LAMA_BASE[3], "rank": 1, "prediction": "D", "p@1": 1.0},  # gained
    LAMA_BASE[4],
]
MC_BASE = [{"index": 0, "gold": 0, "chosen": 0}, {"index": 1, "gold": 1, "chosen": 1},
           {"index": 2, "gold": 0, "chosen": 1}]  # fmt: skip
MC_PRUNED = [{"index": 0, "gold": 0, "chosen": 1}, {"index": 1, "gold": 1, "chosen": 1},
             {"index": 2, "gold": 0, "chosen": 0}]  # fmt: skip


def _minus(drops: tuple[float, float]) -> dict[str, float]:
    return {"lama-trex": BASE["lama-trex"] - drops[0] / 100, "piqa": BASE["piqa"] - drops[1] / 100}


def full_store(path: Path, *, measured: bool = False) -> Path:
    """One model with every sweep of the study, plus a second model with a baseline only.
    Without `measured`, only two trials have (hand-made) records and they do not add up to
    their scores, as in a file written before records were kept: no intervals. With it, every
    result has `ITEMS` records that add up to its score."""
    with ResultsStore(path) as store:
        store = _Measured(store) if measured else store  # type: ignore[assignment]
        for seed in (0, 1):
            records = {"lama-trex": LAMA_BASE, "piqa": MC_BASE} if seed == 0 else None
            store.write(_outcome("m1", None, [], seed, BASE, records=records))
        for group, drops in PRUNE_DROPS.items():
            for level, pair in zip(LEVELS, drops, strict=True):
                recipe = f"prune:l1_unstructured:{group}:{level}"
                records = ({"lama-trex": LAMA_PRUNED, "piqa": MC_PRUNED}
                           if (group, level) == ("overall", 0.2) else None)  # fmt: skip
                store.write(_outcome("m1", recipe, _prune(group, level), 0, _minus(pair),
                                     sweep=f"prune/{group}", records=records))  # fmt: skip
        # quantization, two seeds: attention 49/80 and 47/78, feed-forward 40/70 twice
        for seed, att in ((0, (0.49, 0.80)), (1, (0.47, 0.78))):
            store.write(_outcome("m1", "quant:dynamic_int8:attention", _quant("attention"), seed,
                                 dict(zip(("lama-trex", "piqa"), att, strict=True))))  # fmt: skip
            store.write(_outcome("m1", "quant:dynamic_int8:feed_forward", _quant("feed_forward"),
                                 seed, {"lama-trex": 0.40, "piqa": 0.70}))  # fmt: skip
        for level, value in ((0.2, 0.45), (0.4, 0.30)):
            steps = _prune("overall", level) + _quant("overall")
            recipe = f"prune:l1_unstructured:overall:{level},quant:dynamic_int8:overall"
            store.write(_outcome("m1", recipe, steps, 0, {"lama-trex": value, "piqa": 0.75}))
        for method, drops in FINAL_DROPS.items():
            for level, pair in zip((0.2, 0.4), drops, strict=True):
                recipe = f"prune:{method}:final_layer:{level}"
                store.write(_outcome("m1", recipe, _prune("final_layer", level, method), 0,
                                     _minus(pair)))  # fmt: skip
        store.write(_outcome("m2", None, [], 0, {"lama-trex": 0.30}))
    return path


class _Measured:
    """A store whose every written result gets records that add up to its score."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store

    def write(self, outcome: TrialOutcome) -> int:
        for result in outcome.results:
            value = next(iter(v for k, v in result["metrics"].items() if k in ("acc", "p@1_micro")))
            result["records"] = _items(result["probe"], value)
        return self.store.write(outcome)


@pytest.fixture
def store_path(tmp_path) -> Path:
    return full_store(tmp_path / "study.sqlite")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """The full store's report, written once for the tests that read its files."""
    folder = tmp_path_factory.mktemp("written")
    html_path = write_report(full_store(folder / "study.sqlite"), folder / "report")
    assert html_path == folder / "report" / "report.html"
    return folder / "report"


def _frame(path: Path):
    with ResultsStore(path) as store:
        return load_frame(store)


# -- data and drops ------------------------------------------------------------------------------
def test_drops_are_baseline_minus_compressed_averaged_over_probes(store_path):
    found = {(a.model, a.recipe): a for a in arms(_frame(store_path))}
    overall = found[("m1", "prune:l1_unstructured:overall:0.6")]
    assert overall.compression.kind == "prune" and overall.compression.group == "overall"
    assert overall.compression.level == 0.6
    assert overall.drop().mean == pytest.approx(25.0)
    assert overall.drop(["lama-trex"]).mean == pytest.approx(30.0)
    assert overall.drop(kind="mc").mean == pytest.approx(20.0)
    quant = found[("m1", "quant:dynamic_int8:attention")]
    # seed 0: (1 + 0) / 2 = 0.5; seed 1: (3 + 2) / 2 = 2.5
    assert quant.drop().mean == pytest.approx(1.5) and quant.drop().n == 2
    assert quant.drop().std == pytest.approx(2**0.5)
    pq = found[("m1", "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:overall")]
    assert pq.compression.kind == "prune+quant" and pq.compression.level == 0.2
    # the fraction compressed: zeros for pruning, the whole group for quantization
    assert overall.fraction == pytest.approx(0.6 * 800 / 1000)
    assert quant.fraction == pytest.approx(200 / 1000)


def test_a_trial_without_baseline_has_no_drop(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.write(_outcome("m", "quant:dynamic_int8:attention", _quant("attention"), 5,
                             {"lama-trex": 0.4}))  # fmt: skip
    frame = _frame(path)
    assert frame.points[0].drop is None
    assert arms(frame)[0].drop() is None
    assert draw_plots(frame, tmp_path / "plots") == []  # nothing to draw without a baseline


# -- tables -------------------------------------------------------------------------------------
def test_tables_show_the_studys_layout_with_missing_probes_as_missing(store_path):
    """The baseline table here; the first study's Tables 1 and 4-6 in test_paper_report.py."""
    tables = {t.name: t for t in build_tables(_frame(store_path))}
    assert list(tables) == ["baseline", "namburi2023-table1", "namburi2023-table3",
                            "namburi2023-table6", "drops",
                            *EXTRA]  # fmt: skip
    base = to_markdown(tables["baseline"])
    assert "| Model | lama-trex | piqa | winogrande |" in base
    assert "| m1 | 50.0 ± 0.0 | 80.0 ± 0.0 | 60.0 ± 0.0 |" in base  # seeds 0 and 1
    assert "| m2 | 30.0 | – | – |" in base  # m2 has only LAMA: missing, never zero
    rows = list(csv.reader(to_csv(tables["baseline"]).splitlines()))
    assert rows[2] == ["m2", "30", "", "1", "", "", "0", "", "", "0"]


@pytest.mark.integration
def test_tables_without_data_are_skipped(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.write(_outcome("m", None, [], 0, {"lama-trex": 0.5}))
        store.write(_outcome("m", "prune:l1_unstructured:attention:0.5",
                             _prune("attention", 0.5), 0, {"lama-trex": 0.2}))  # fmt: skip
    result = generate_report(path, tmp_path / "out")
    # one seed, no quantization: no Table 1 or 4-6; Table 3 counts the pruned group
    assert [t.name for t in result.tables] == ["baseline", "namburi2023-table3", "drops", *EXTRA]
    written = sorted(p.name for p in (tmp_path / "out" / "tables").iterdir())
    assert [n for n in written if n.startswith("baseline")] == [
        "baseline.csv", "baseline.md", "baseline.tex"]  # fmt: skip
    assert {n.split(".")[0] for n in written if n.startswith("namburi2023")} == {
        "namburi2023-table3"}  # fmt: skip


@pytest.mark.skipif(not HAS_CATEGORIES, reason="knowcomp.probes.categories is not installed")
def test_category_averages_table(store_path):
    tables = {t.name: t for t in build_tables(_frame(store_path))}
    text = to_markdown(tables["categories"])
    assert ("| Model | Compression | World knowledge | Common reasoning | Language understanding"
            " | Average |") in text  # fmt: skip
    assert "| m1 | baseline | 50.0 ± 0.0 | 80.0 ± 0.0 | 60.0 ± 0.0 | 63.3 ± 0.0 |" in text
    # no winogrande after compression: the language cell is missing, the average has two probes
    assert "| m1 | prune:l1_unstructured:overall:0.2 | 45.0 | 75.0 | – | 60.0 |" in text
    assert "| m2 | baseline | 30.0 | – | – | 30.0 |" in text


# -- findings -----------------------------------------------------------------------------------
@pytest.mark.integration
def test_findings_hold_on_data_shaped_like_the_study(measured):
    findings = check_findings(_frame(measured))
    assert [f.verdict for f in findings[:4]] == ["holds"] * 4
    # the section-level claims: S2 needs GQ of the group GPQ quantized; S3's piqa drops tie
    assert [f.verdict for f in findings[4:7]] == ["holds", "not enough data", "inconclusive"]
    assert {f.verdict for f in findings[7:]} == {"not enough data"}  # no recovered trials
    one, two, three, four = findings[:4]
    # tested per model and probe kind (LAMA and multiple choice apart), Holm over all four
    assert len(one.tests) == 4 and all("Holm-adjusted p" in t for t in one.tests)
    assert one.tests[0].startswith("m1, LAMA probes (P@1), l1_unstructured: drop overall - "
                                   "drop attention (mean over levels) = 13.00 ")  # fmt: skip
    assert ("m1, multiple-choice probes (accuracy), dynamic_int8: drop feed_forward - drop "
            "attention = 9.00 points [") in three.tests[1]  # fmt: skip
    # slopes per 10% on LAMA: below 50% (2.5 + 0.5 + 1.0) / 3; above (7.5 + 4.5 + 6.5) / 3
    assert two.tests[0].startswith("m1, LAMA probes (P@1), l1_unstructured: slope above 50% - "
                                   "slope up to 50% = 4.83 points per 10%")  # fmt: skip
    assert "holds in 2 of 2 unit(s)" in one.summary and "1 of 1 model(s): m1 holds" in one.summary
    assert any("lama-trex: mean drop overall 21.25, attention 8.25, feed_forward 14.00" in line
               for line in one.evidence)  # fmt: skip
    assert any("piqa (2 seed(s)): drop attention 1.00, feed_forward 10.00" in line
               for line in three.evidence)  # fmt: skip
    assert any("structured ln_structured 7.00, unstructured l1_unstructured 1.00" in line
               for line in four.evidence)  # fmt: skip


def test_untested_findings_are_inconclusive(store_path):
    """A file whose records do not add up to its scores (or has none) cannot be tested."""
    findings = check_findings(_frame(store_path))
    assert [f.verdict for f in findings[:4]] == ["inconclusive"] * 4
    assert "holds in 0 of 2 unit(s) (2 inconclusive)" in findings[0].summary
    assert findings[0].tests[0] == (
        "m1, LAMA probes (P@1), l1_unstructured: drop overall - drop attention (mean over "
        "levels): not tested: the results file has no per-item records for every compared "
        "result (written before records were kept?)"
    )


def test_findings_that_do_not_hold_and_missing_data(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store = _Measured(store)  # type: ignore[assignment]
        store.write(_outcome("m", None, [], 0, {"lama-trex": 0.5}))
        # attention pruning hurts most, and the drop flattens above 50%
        for group, drops in (("overall", (10, 12)), ("attention", (20, 21))):
            for level, drop in zip((0.4, 0.8), drops, strict=True):
                store.write(_outcome("m", f"prune:l1_unstructured:{group}:{level}",
                                     _prune(group, level), 0,
                                     {"lama-trex": 0.5 - drop / 100}))  # fmt: skip
        for group, value in (("attention", 0.30), ("feed_forward", 0.45)):
            store.write(_outcome("m", f"quant:dynamic_int8:{group}", _quant(group), 0,
                                 {"lama-trex": value}))  # fmt: skip
    one, two, three, four = check_findings(_frame(path))[:4]
    assert one.verdict == "does not hold"
    assert "overall 11.00, attention 20.50" in one.evidence[0]
    assert two.verdict == "does not hold"
    assert three.verdict == "does not hold"
    assert "drop attention 20.00, feed_forward 5.00" in three.evidence[0]
    assert four.verdict == "not enough data"


def test_a_small_difference_is_inconclusive_with_the_items_that_would_settle_it(tmp_path):
    import math

    from scipy import stats

    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store = _Measured(store)  # type: ignore[assignment]
        store.write(_outcome("m", None, [], 0, {"piqa": 0.8}))
        for group, value in (("attention", 0.7925), ("feed_forward", 0.79)):  # 3 and 4 items
            store.write(_outcome("m", f"quant:dynamic_int8:{group}", _quant(group), 0,
                                 {"piqa": value}))  # fmt: skip
    three = check_findings(_frame(path))[2]
    assert three.verdict == "inconclusive"
    (test,) = three.tests
    assert "drop feed_forward - drop attention = 0.25 points [" in test
    found = re.search(r"about ([\d,]+) items per probe \(now 400\) would give 80% power", test)
    # one item of 400 differs: se = sd / sqrt(400), and n (z_.975 + z_.8)^2 se^2 / 0.0025^2 items
    z = np.r_[1.0, np.zeros(399)]
    se = z.std(ddof=1) / 20
    factor = ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * se / 0.0025) ** 2
    assert found and int(found.group(1).replace(",", "")) == math.ceil(400 * factor), test


def test_findings_with_only_a_baseline_say_not_enough_data(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.write(_outcome("m", None, [], 0, {"piqa": 0.7}))
    assert {f.verdict for f in check_findings(_frame(path))} == {"not enough data"}


# -- forgetting ---------------------------------------------------------------------------------
def test_forgetting_lists_facts_and_items_the_baseline_knew(store_path):
    with ResultsStore(store_path) as store:
        forgetting = find_forgetting(store, load_frame(store))
    assert [f["uuid"] for f in forgetting.facts] == ["u1", "u3"]
    assert forgetting.facts[0]["relation"] == "P1" and forgetting.facts[0]["prediction"] == "y"
    assert [(i["index"], i["baseline_chosen"], i["chosen"]) for i in forgetting.items] == [
        (0, 0, 1)
    ]
    summary = {(r["probe"], r["relation"]): r for r in forgetting.summary}
    assert len(summary) == 4  # lama-trex: (all), P1, P2 (P3 has no scored fact); piqa: (all)
    for key, expected in {
        ("lama-trex", "(all)"): (3, 2, 1),  # u5 is not scored (several tokens)
        ("lama-trex", "P1"): (2, 1, 0),
        ("lama-trex", "P2"): (1, 1, 1),
        ("piqa", "(all)"): (2, 1, 1),
    }.items():
        row = summary[key]
        assert (row["baseline_correct"], row["forgotten"], row["gained"]) == expected
    assert summary[("lama-trex", "P1")]["share_forgotten"] == pytest.approx(0.5)


# -- files, plots and html ----------------------------------------------------------------------
@pytest.mark.integration
def test_report_writes_every_part(written):
    out = written
    plots = sorted(p.name for p in (out / "plots").iterdir())
    for stem in ("drop_vs_sparsity_m1", "probe_drops_m1", "final_layer_m1", "drop_vs_fraction_m1"):
        assert f"{stem}.png" in plots and f"{stem}.svg" in plots
        assert (out / "plots" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out / "plots" / f"{stem}.svg").read_text()
    assert not any("m2" in p for p in plots)  # a baseline alone has nothing to plot
    for name in (
        "findings.md",
        "drops.csv",
        "forgetting/forgetting_facts.csv",
        "forgetting/forgetting_items.csv",
        "forgetting/forgetting_by_relation.csv",
    ):
        assert (out / name).is_file(), name
    drops = list(csv.DictReader((out / "drops.csv").open()))
    row = next(r for r in drops if r["recipe"] == "prune:l1_unstructured:feed_forward:0.8"
               and r["probe"] == "piqa")  # fmt: skip
    assert float(row["drop_points"]) == pytest.approx(20.0)
    assert row["majority"] == "0.5" and row["kind"] == "prune" and row["group"] == "feed_forward"
    facts = list(csv.DictReader((out / "forgetting" / "forgetting_facts.csv").open()))
    assert [f["uuid"] for f in facts] == ["u1", "u3"]
    findings = (out / "findings.md").read_text()
    assert findings.count("**inconclusive**") == 6  # its records do not add up: untested


def test_html_is_self_contained(written):
    page = (written / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r"""src\s*=\s*['"]([^'"]*)""", page)
    assert len(sources) == len(list((written / "plots").glob("*.png")))
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""href\s*=\s*['"](?!#)""", page)  # only links inside the page
    assert "<link" not in page and "<script" not in page
    for text in (
        "synthetic",
        "m1",
        "m2",
        "2.13.0+cpu",
        "Findings check",
        "Table 6",
        "48.0 ± 1.4",
        "holds",
        "majority",
        "Per-fact forgetting",
    ):
        assert text in page, text
    assert '<td class="num missing">–</td>' in page


def test_majority_level_is_the_drop_down_to_the_majority_class(store_path):
    from knowcomp.report.stats import majority_drop

    frame = _frame(store_path)
    assert majority_drop(frame, "m1", ["piqa"]) == pytest.approx(30.0)
    assert majority_drop(frame, "m1", ["piqa", "winogrande"]) == pytest.approx(17.5)
    assert majority_drop(frame, "m1", ["lama-trex"]) is None


# -- the command --------------------------------------------------------------------------------
def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.integration
def test_report_command_prints_findings_and_writes_the_folder(store_path, tmp_path):
    result = _run("report", str(store_path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "1. Pruning all modules (overall) hurts most: inconclusive" in result.output
    assert "(mean over levels): not tested: the results file has no per-item" in result.output
    assert "H1. Knowledge is displaced rather than forgotten: not enough data" in result.output
    assert (tmp_path / "out" / "report.html").is_file()


def test_report_command_default_folder_and_quiet(tmp_path):
    path = tmp_path / "small.sqlite"
    with ResultsStore(path) as store:
        store.write(_outcome("m", None, [], 0, {"lama-trex": 0.5}))
    result = _run("report", str(path), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == f"{tmp_path / 'small-report' / 'report.html'}\n"


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0]


def test_report_command_errors(tmp_path):
    out = str(tmp_path / "out")
    _one_line_error(_run("report", str(tmp_path / "nope.sqlite"), "-o", out), "does not exist")
    _one_line_error(_run("report", str(tmp_path), "-o", out), "is a folder")
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database at all" * 100)
    _one_line_error(_run("report", str(text), "-o", out), "not a knowcomp results file")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    _one_line_error(_run("report", str(other), "-o", out), "not a knowcomp results file")
    empty = tmp_path / "empty.sqlite"
    ResultsStore(empty).close()
    _one_line_error(_run("report", str(empty), "-o", out), "has no results yet")
    future = full_store(tmp_path / "future.sqlite")
    with sqlite3.connect(future) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    _one_line_error(_run("report", str(future), "-o", out), "results schema 99")
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


# -- end to end ---------------------------------------------------------------------------------
def _tiny_llama(folder: Path) -> Path:
    """A random 2-layer Llama saved with SmolLM2's tokenizer: a model folder to study."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.conftest import smollm2_tokenizer

    tokenizer = smollm2_tokenizer()
    config = AutoConfig.for_model(
        "llama", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, vocab_size=len(tokenizer),
        max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer
def test_run_prints_each_drop_with_its_interval(tmp_path):
    import yaml

    spec = {"name": "tiny-run", "models": [str(_tiny_llama(tmp_path / "tiny"))],
            "probes": ["lama-trex", "piqa"], "limit": 1, "output": str(tmp_path / "r.sqlite"),
            "recipes": ["prune:l1_unstructured:overall:0.9"]}  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = _run("run", str(path), "--no-report")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("done")]
    assert len(lines) == 2 and "(drop" not in lines[0]  # the baseline runs first
    assert re.search(r"lama-trex 0\.\d{3} \(drop -?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\] "
                     r"points, p = [\d.e-]+\)", lines[1]), lines[1]  # fmt: skip


@pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer
def test_report_of_a_real_tiny_study(tmp_path):
    """A real study on a random 2-layer Llama, then its report: every part is there."""
    from knowcomp.study import run_study
    from knowcomp.study.spec import spec_from_dict

    folder = _tiny_llama(tmp_path / "tiny-llama")
    spec = spec_from_dict({
        "name": "tiny-report", "models": [str(folder)], "probes": ["lama-trex", "piqa"],
        "limit": 1, "output": str(tmp_path / "r.sqlite"),
        "recipes": [
            {"name": "prune/overall", "recipe": "prune:l1_unstructured:overall:{level}",
             "levels": [0.3, 0.7]},
            {"name": "prune/attention", "recipe": "prune:l1_unstructured:attention:{level}",
             "levels": [0.3, 0.7]},
            "quant:dynamic_int8:attention", "quant:dynamic_int8:feed_forward",
        ],
    })  # fmt: skip
    run_study(spec)
    result = generate_report(tmp_path / "r.sqlite", tmp_path / "out")
    assert [t.name for t in result.tables] == ["baseline", "namburi2023-table3",
                                               "namburi2023-table6", "drops", *EXTRA]  # fmt: skip
    assert {p.name.removesuffix("_tiny-llama") for p in result.plots} == {
        "drop_vs_sparsity", "probe_drops", "drop_vs_fraction", "namburi2023-fig5",
        "namburi2023-fig6", "namburi2023-fig11", "namburi2023-fig15", "namburi2023-fig16",
        "hoang2024-fig1"}  # fmt: skip
    verdicts = [f.verdict for f in result.findings]
    assert verdicts[0] != "not enough data" and verdicts[1] != "not enough data"
    assert verdicts[2] != "not enough data" and verdicts[3] == "not enough data"
    summary = {(r["recipe"], r["probe"]) for r in result.forgetting.totals()}
    assert ("prune:l1_unstructured:overall:0.7", "lama-trex") in summary
    page = result.html.read_text()
    assert "tiny-report" in page and "http" not in page
    # every drop is paired on the stored records, and its interval is the paired test's
    from knowcomp.analysis.intervals import paired_drop
    from knowcomp.analysis.items import aligned, item_values

    with ResultsStore(tmp_path / "r.sqlite") as store:
        frame = load_frame(store)
        point = next(p for p in frame.points if p.probe == "lama-trex")
        base_key = frame.baseline_keys[(point.model, point.seed, "lama-trex")]
        runs = [item_values(store.records(k, "lama-trex"), "p@1_micro") for k in
                (base_key, point.trial_key)]  # fmt: skip
    pair = aligned(runs)
    expected = paired_drop(pair.rows[0], pair.rows[1], pair.clusters).scaled(100)
    assert point.drop_ci == expected and point.drop_ci.value == pytest.approx(point.drop)
    assert len(pair.keys) >= 20  # one fact per relation whose object is one token
    exported = tmp_path / "r.csv"
    done = _run("results", str(tmp_path / "r.sqlite"), "-f", "csv", "-o", str(exported))
    assert done.exit_code == 0, done.output
    listed = list(csv.DictReader(exported.open()))
    row = next(r for r in listed if r["trial_key"] == point.trial_key
               and r["probe"] == "lama-trex")  # fmt: skip
    assert float(row["drop_low"]) == pytest.approx(expected.low)
    assert float(row["headline_high"]) >= float(row["headline"]) >= float(row["headline_low"])
    shown = _run("results", str(tmp_path / "r.sqlite"), "--probe", "piqa")
    assert shown.exit_code == 0 and "Drop" in shown.output and "Headline" in shown.output


def test_lama_generate_mode_and_unscored_metrics(tmp_path):
    """Generate mode reports exact_match_micro and `matched` records; NaN means nothing scored."""
    path = tmp_path / "s.sqlite"
    base = [{"relation": "P1", "uuid": "a", "matched": True, "prediction": "A"},
            {"relation": "P1", "uuid": "b", "matched": False, "prediction": "x"}]  # fmt: skip
    pruned = [{**base[0], "matched": False, "prediction": "y"}, {**base[1], "matched": True}]
    with ResultsStore(path) as store:
        for recipe, steps, value, records in (
            (None, [], 0.5, base),
            ("prune:l1_unstructured:overall:0.5", _prune("overall", 0.5), 0.25, pruned),
        ):
            outcome = _outcome("m", recipe, steps, 0, {})
            outcome.results = [
                {"probe": "lama-trex", "category": "world_knowledge", "counts": {},
                 "metrics": {"exact_match_micro": value, "exact_match_macro": value},
                 "records": records},
                {"probe": "piqa", "category": "common_reasoning", "counts": {},
                 "metrics": {"acc": float("nan"), "majority": float("nan")}},
            ]  # fmt: skip
            store.write(outcome)
        frame = load_frame(store)
        forgetting = find_forgetting(store, frame)
    assert [(p.probe, p.kind, p.metric) for p in frame.points] == [
        ("lama-trex", "lama", "exact_match_micro")]  # fmt: skip
    assert frame.points[0].drop == pytest.approx(25.0)
    assert [f["uuid"] for f in forgetting.facts] == ["a"]
    total = forgetting.totals()[0]
    assert (total["baseline_correct"], total["forgotten"], total["gained"]) == (1, 1, 1)


@pytest.mark.integration
def test_a_read_only_results_file_is_reported_from_a_copy(store_path, tmp_path, monkeypatch):
    import knowcomp.report.build as build

    monkeypatch.setattr(build, "_writable", lambda path: False)
    before = store_path.read_bytes()
    result = build.generate_report(store_path, tmp_path / "ro")
    assert result.html.is_file() and len(result.findings) == 11  # both studies' claims
    assert store_path.read_bytes() == before


def test_probe_kinds_and_headline_metrics():
    from knowcomp.report.frame import headline_metric, probe_kind

    cases = [
        ({"p@1_micro": 0.1, "mrr_micro": 0.2}, "lama", "p@1_micro"),
        ({"exact_match_micro": 0.1, "capped": 0.0}, "lama", "exact_match_micro"),
        ({"acc": 0.6, "acc_norm": 0.7, "majority": 0.5}, "mc", "acc"),
        ({"acc": 0.6, "acc_norm": 0.7}, "mc", "acc"),  # SciQ: no majority class
        ({"exact_match": 0.2}, "qa", "exact_match"),
        ({"acc": 0.3, "perplexity": 40.0}, "other", "acc"),  # LAMBADA
        ({"acc": float("nan")}, "other", None),
    ]
    for metrics, kind, headline in cases:
        assert (probe_kind(metrics), headline_metric(metrics)) == (kind, headline), metrics


# -- intervals ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """The full store with every result's per-item records (`ITEMS` per probe)."""
    return full_store(tmp_path_factory.mktemp("measured") / "m.sqlite", measured=True)


@pytest.mark.integration
def test_tables_show_each_drop_and_score_with_its_interval(measured):
    from scipy import stats

    from knowcomp.analysis.intervals import paired_drop

    frame = _frame(measured)
    tables = {t.name: t for t in build_tables(frame)}
    drops = to_markdown(tables["drops"])
    # overall pruning at 20%: 20 of 400 PIQA items lost, none gained
    base = np.r_[np.ones(320), np.zeros(80)]
    pruned = np.r_[np.ones(300), np.zeros(100)]
    expected = paired_drop(base, pruned).scaled(100)
    assert expected.value == pytest.approx(5.0)
    row = next(line for line in drops.splitlines() if "overall:0.2 |" in line)
    assert f"| 5.0 [{expected.low:.1f}, {expected.high:.1f}] |" in row
    assert row.startswith("| m1 | prune:l1_unstructured:overall:0.2 | 0 |")
    rows = list(csv.DictReader(to_csv(tables["drops"]).splitlines()))
    mine = next(r for r in rows if r["Compression"] == "prune:l1_unstructured:overall:0.2")
    assert float(mine["piqa p"]) == pytest.approx(stats.binomtest(20, 20).pvalue, rel=1e-3)
    assert float(mine["piqa low"]) == pytest.approx(expected.low, abs=1e-4)
    latex = to_latex(tables["drops"])
    assert "& lama-trex & low & high & piqa & low & high" in latex
    # a score from one seed: its own interval (Wilson: the relations all score alike)
    ci = stats.binomtest(120, 400).proportion_ci(method="wilson")
    base_md = to_markdown(tables["baseline"])
    assert f"| m2 | 30.0 [{100 * ci.low:.1f}, {100 * ci.high:.1f}] | – | – |" in base_md
    assert "| m1 | 50.0 ± 0.0 |" in base_md  # two seeds: the spread between them
    write_report(measured, measured.parent / "report")
    listed = list(csv.DictReader((measured.parent / "report" / "drops.csv").open()))
    row = next(r for r in listed if r["recipe"] == "prune:l1_unstructured:overall:0.2"
               and r["probe"] == "piqa")  # fmt: skip
    assert float(row["drop_low"]) == pytest.approx(expected.low, abs=1e-3)
    assert row["items"] == "400" and "McNemar" in row["test"]
    cats = to_markdown(tables["categories"])
    line = next(x for x in cats.splitlines() if "| prune:l1_unstructured:overall:0.2 |" in x)
    assert re.search(r"\| 45\.0 \[4\d\.\d, 4\d\.\d\] \| 75\.0 \[7\d\.\d, 7\d\.\d\] \|", line)
    # the averaged drop over probes of a kind (plots) has a bootstrap interval around it
    arm = next(a for a in arms(frame) if a.recipe == "prune:l1_unstructured:overall:0.2")
    averaged = arm.drop()
    assert averaged.mean == pytest.approx(5.0) and averaged.low < 5.0 < averaged.high


@pytest.mark.integration
def test_the_report_of_a_measured_store_draws_bands_and_tests_findings(measured, tmp_path):
    result = generate_report(measured, tmp_path / "out")
    assert (tmp_path / "out" / "tables" / "drops.md").is_file()
    svg = (tmp_path / "out" / "plots" / "probe_drops_m1.svg").read_text()
    assert "<svg" in svg
    assert {f.verdict for f in result.findings[:4]} == {"holds"}


def test_recovered_share_has_an_interval_or_says_the_loss_is_too_small(tmp_path):
    path = tmp_path / "r.sqlite"
    recovery = {"method": "lora", "label": "lora", "settings": "r=8", "trainable_params": 10,
                "log": {"tokens": 8, "steps": 1, "seconds": 1.0}}  # fmt: skip
    with ResultsStore(path) as store:
        store.write(_outcome("m", None, [], 0, {"piqa": 0.80}, measured=True))
        for recipe, lost, back in (
            ("prune:l1_unstructured:overall:0.5", 0.20, 0.10),
            ("prune:l1_unstructured:overall:0.1", 0.005, 0.0),
        ):
            steps = _prune("overall", float(recipe.rsplit(":", 1)[1]))
            store.write(_outcome("m", recipe, steps, 0, {"piqa": 0.80 - lost}, measured=True))
            healed = _outcome("m", recipe, steps, 0, {"piqa": 0.80 - lost + back}, measured=True)
            healed.trial["trial_key"] += "|lora"
            healed.trial["recovery"] = recovery
            store.write(healed)  # fmt: skip
        frame = load_frame(store)
    table = next(t for t in build_tables(frame) if t.name == "recovery")
    shares = {labels[1]: cells[-1] for labels, cells in table.rows if labels[2] == "lora"}
    half = shares["prune:l1_unstructured:overall:0.5"]
    assert half.mean == pytest.approx(50.0) and half.low < 50.0 < half.high
    assert half.low > 30 and half.high < 70
    assert shares["prune:l1_unstructured:overall:0.1"] == "none: loss not significant"
    assert "none: loss not significant" in to_markdown(table)
