"""Adaptive evaluation (`--precision`) on a tiny model study: it stops early with the interval
stored, the baseline covers every item a trial used, a tighter rerun extends the stored trial,
a run without it completes it to the exhaustive numbers, and without it nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowcomp.analysis.items import item_values
from knowcomp.models import load_model
from knowcomp.pipeline.adaptive import STOP_EXHAUSTED, STOP_PRECISION, check_precision
from knowcomp.probes.base import RunOptions
from knowcomp.probes.registry import get_probe
from knowcomp.probes.sampling import take
from knowcomp.store import ResultsStore
from knowcomp.study import expand, run_study
from knowcomp.study.spec import spec_from_dict
from tests.conftest import save_tiny_llama

pytestmark = pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROBES = ["piqa", "lama-google-re"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, load_model("smollm2-135m").tokenizer, max_position_embeddings=512,
                    tie_word_embeddings=True)  # fmt: skip
    return folder


def _spec(model: Path, out: Path, precision: float | None):
    data = {"name": "adaptive", "models": [str(model)], "probes": PROBES, "limit": 100,
            "output": str(out), "data_dir": str(DATA),
            "recipes": ["prune:l1_unstructured:overall:0.9"]}  # fmt: skip
    if precision is not None:
        data["precision"] = precision
    return spec_from_dict(data)


def _results(out: Path) -> dict[tuple[str, str], dict]:
    with ResultsStore(out, readonly=True) as store:
        return {(t["sweep"], p): store.result(t["trial_key"], p) for t in store.trials()
                for p in store.done_probes(t["trial_key"])}  # fmt: skip


def _keys(result: dict) -> list:
    metric = "acc" if result["probe"] == "piqa" else "p@1_micro"
    return list(item_values(result["records"], metric).keys)


def test_take_parts_split_the_subset_in_a_seeded_order():
    items = list(range(500))
    whole = take(items, 300, seed=3)
    parts = [take(items, 300, 3, (lo, hi), "r") for lo, hi in ((0, 0.2), (0.2, 0.7), (0.7, 1))]
    assert sorted(i for part in parts for i in part) == whole  # each item in one part
    assert 30 < len(parts[0]) < 90  # about a fifth of it, chosen by the draws
    assert take(items, 300, 3, (0, 0.2), "r") == parts[0]  # the same every time
    assert take(items, 300, 3, (0, 0.2), "other relation") != parts[0]


def test_adaptive_study_stops_extends_and_completes(model_dir, tmp_path):
    out = tmp_path / "adaptive.sqlite"
    run_study(_spec(model_dir, out, 30.0))
    first = _results(out)
    for probe in PROBES:
        trial = first[("prune:l1_unstructured:overall:0.9", probe)]
        base = first[("baseline", probe)]
        seq = trial["sequential"]
        assert seq["stop"] == STOP_PRECISION and seq["precision"] == 30.0
        assert seq["drop"]["high"] - seq["drop"]["low"] <= 60.0
        assert seq["share"] < 1 and seq["drop"]["items"] < seq["pool"]
        assert set(_keys(trial)) <= set(_keys(base))  # the baseline covers the trial's items
        assert base["sequential"]["share"] >= seq["share"]
        # the stored numbers are those of the items used, and the drop is paired on them
        values = item_values(trial["records"], _keys_metric(probe))
        assert values.values.mean() == pytest.approx(trial["metrics"][_keys_metric(probe)])
        assert len(values) == seq["drop"]["items"]

    run_study(_spec(model_dir, out, 30.0))  # a rerun at the same precision: nothing to do
    assert _results(out) == first
    run_study(_spec(model_dir, out, 4.0))  # tighter: the stored trial is extended
    second = _results(out)
    for probe in PROBES:
        before = _keys(first[("prune:l1_unstructured:overall:0.9", probe)])
        after = second[("prune:l1_unstructured:overall:0.9", probe)]
        assert _keys(after)[: len(before)] == before  # continued, not started over
        assert len(_keys(after)) > len(before)
        assert after["sequential"]["precision"] == 4.0

    run_study(_spec(model_dir, out, None))  # no precision: every item, as an exhaustive run
    exhaustive = tmp_path / "exhaustive.sqlite"
    run_study(_spec(model_dir, exhaustive, None))
    completed, reference = _results(out), _results(exhaustive)
    assert completed.keys() == reference.keys()
    for key, ref in reference.items():
        got = completed[key]
        assert ref["sequential"] is None
        assert got["sequential"] is None or got["sequential"]["stop"] == STOP_EXHAUSTED
        assert sorted(map(str, _keys(got))) == sorted(map(str, _keys(ref)))
        assert got["metrics"] == pytest.approx(ref["metrics"], abs=1e-9)


def _keys_metric(probe: str) -> str:
    return "acc" if probe == "piqa" else "p@1_micro"


def test_without_precision_keys_and_results_are_as_before(model_dir, tmp_path):
    plain = _spec(model_dir, tmp_path / "a.sqlite", None)
    adaptive = _spec(model_dir, tmp_path / "b.sqlite", 2.0)
    assert [t.key for t in expand(plain)] == [t.key for t in expand(adaptive)]
    assert plain.spec_hash() == adaptive.spec_hash()
    small = spec_from_dict({"name": "plain", "models": [str(model_dir)], "probes": ["piqa"],
                            "limit": 30, "output": str(tmp_path / "p.sqlite"),
                            "data_dir": str(DATA), "recipes": []})  # fmt: skip
    run_study(small)
    stored = _results(small.output)[("baseline", "piqa")]
    direct = get_probe("piqa").run(load_model(str(model_dir)),
                                   RunOptions(limit=30, seed=0, data_dir=DATA))  # fmt: skip
    assert stored["sequential"] is None
    assert stored["metrics"] == direct.metrics and stored["records"] == direct.records


@pytest.mark.parametrize("bad", [0, -1, "tight", float("nan"), float("inf"), True])
def test_precision_must_be_a_positive_number(bad):
    with pytest.raises(Exception, match="precision must be a positive number"):
        check_precision(bad)


def test_results_file_from_before_the_column_reads_and_upgrades(tmp_path):
    """A results file without `results.sequential` reads (read-only: no column added) and gets
    the column when a run opens it for writing; its results stay exhaustive (None)."""
    import sqlite3

    db = tmp_path / "old.sqlite"
    ResultsStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE results DROP COLUMN sequential")
        conn.execute("INSERT INTO trials (trial_key, study, spec_hash, model, sweep, seed, "
                     "lama_mode, dtype, created) VALUES ('k', 's', 'h', 'm', 'baseline', 0, "
                     "'next-token', 'float32', 0)")  # fmt: skip
        conn.execute("INSERT INTO results VALUES ('k', 'piqa', 'c', '{\"acc\": 0.5}', '{}', "
                     "'[]', 1.0, 0)")  # fmt: skip
    with ResultsStore(db, readonly=True) as store:
        assert store.rows()[0]["sequential"] is None
        assert store.sequential("k", "piqa") is None
        assert store.result("k", "piqa")["metrics"] == {"acc": 0.5}
    with sqlite3.connect(db) as conn:
        assert "sequential" not in {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    with ResultsStore(db) as store:
        assert store.result("k", "piqa")["sequential"] is None
    with sqlite3.connect(db) as conn:
        assert "sequential" in {r[1] for r in conn.execute("PRAGMA table_info(results)")}


@pytest.mark.parametrize("name", ["piqa", "lama-google-re", "lambada"])
def test_parts_merge_to_the_one_shot_result(model_dir, name):
    """A probe scored in three parts and merged (`probes.merge`) reads as the probe scored at
    once: the same metrics, counts and items (log-likelihoods differ in the last float digits
    between batch shapes, so records are compared without them)."""
    from dataclasses import replace

    from knowcomp.probes.merge import merge, metrics_function

    loaded = load_model(str(model_dir))
    probe = get_probe(name)
    options = RunOptions(limit=12, seed=1, data_dir=DATA)
    whole = probe.run(loaded, options).to_dict()
    parts = [probe.run(loaded, replace(options, part=part)).to_dict()
             for part in ((0.0, 0.3), (0.3, 0.6), (0.6, 1.0))]  # fmt: skip
    records = [r for part in parts for r in part["records"]]
    merged = merge(parts, records, metrics_function(probe, options))
    assert merged["metrics"] == pytest.approx(whole["metrics"], rel=1e-6, abs=1e-9)
    assert merged["counts"] == whole["counts"]

    def exact(rows):
        return sorted(repr({k: v for k, v in r.items() if "loglikelihood" not in k}) for r in rows)

    assert exact(records) == exact(whole["records"])
