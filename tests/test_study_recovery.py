"""Recover steps in studies: the spec, trial keys, the worker (train, attach, evaluate, detach,
reuse a saved adapter), the store's recovery column, the forget-recover preset and the report's
recovery tables. Tiny random decoders with a word-level tokenizer and a corpus file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.recovery import RecoveryError
from knowcomp.store import TrialOutcome
from knowcomp.study import ResultsStore, RunListener, expand, preset_spec, run_study
from knowcomp.study.spec import SpecError, spec_from_dict
from knowcomp.study.trials import Trial, validate
from tests.conftest import build_tiny, results_file_without
from tests.test_models import _save_tiny_with_tokenizer
from tests.test_recovery import write_corpus

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
PRUNE = "prune:l1_unstructured:overall:0.5"
PROMPT = "prompt:tokens=2:lr=0.05"
LORA = "lora:lr=0.01"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study-recovery")
    _save_tiny_with_tokenizer(build_tiny("llama"), root / "model")
    _save_tiny_with_tokenizer(build_tiny("bert"), root / "bert")
    write_corpus(root / "corpus.txt")
    return root


def _spec(folder: Path, out: Path, **extra) -> dict:
    data = {
        "name": "tiny-recover",
        "models": [str(folder / "model")],
        "probes": ["arc-easy", "piqa", "winogrande"],
        "limit": 2,
        "output": str(out),
        "data_dir": str(SHARED_DATA),
        "recipes": [{"name": "prune", "recipe": PRUNE, "recover": [PROMPT, LORA]}],
        "recovery": {"tokens": 256, "seqlen": 32, "batch_size": 4,
                     "calibration": str(folder / "corpus.txt")},
    }  # fmt: skip
    data.update(extra)
    return data


# -- the spec ---------------------------------------------------------------------------------
def test_a_recover_sweep_expands_to_its_compressed_trial_and_one_per_method(folder, tmp_path):
    spec = spec_from_dict(_spec(folder, tmp_path / "r.sqlite"))
    trials = expand(spec)
    assert [(t.recipe, t.method) for t in trials] == [
        (None, None), (PRUNE, None), (PRUNE, PROMPT), (PRUNE, "lora:lr=0.01")]  # fmt: skip
    assert trials[2].recover == PROMPT  # the options that differ from the defaults
    assert spec_from_dict(_spec(folder, tmp_path / "r.sqlite", recipes=[
        {"recipe": PRUNE, "recover": "prompt:lr=0.05:tokens=2:init=vocab"}]),
    ).sweeps[0].recover == (PROMPT,)  # fmt: skip
    assert json.loads(trials[2].train) == {"tokens": 256, "seqlen": 32, "batch_size": 4,
                                           "calibration": str(folder / "corpus.txt")}  # fmt: skip
    assert trials[2].label == "prune + prompt:tokens=2:lr=0.05"
    assert spec.adapters_folder() == tmp_path / "r-adapters"
    # a plain sweep of the same recipe is the same compressed trial, not a second one
    both = spec_from_dict(_spec(folder, tmp_path / "r.sqlite", recipes=[
        PRUNE, {"name": "prune+lora", "recipe": PRUNE, "recover": "lora:lr=0.01"}]))  # fmt: skip
    assert [(t.sweep, t.method) for t in expand(both)] == [
        ("baseline", None), (PRUNE, None), ("prune+lora", "lora:lr=0.01")]  # fmt: skip


def test_trial_keys_with_and_without_recovery():
    plain = Trial("m", "s", PRUNE, 0.5, 0, 2, "next-token", "float32")
    assert plain.key == "613f70851df524363cbb"  # the key every earlier knowcomp gave it
    train = json.dumps({"tokens": 256, "seqlen": 32, "batch_size": 4, "calibration": "data"})
    lora = Trial("m", "s", PRUNE, 0.5, 0, 2, "next-token", "float32", recover="lora",
                 train=train)  # fmt: skip
    assert lora.key != plain.key
    more = json.dumps({"tokens": 512, "seqlen": 32, "batch_size": 4, "calibration": "data"})
    assert Trial(**{**lora.to_dict(), "train": more}).key != lora.key
    assert Trial(**lora.to_dict() | {"recover": "prompt"}).key != lora.key
    assert lora.key == "2a98f4fab5c48536da8b"  # pinned: a changed key would orphan stored rows


def test_a_recovery_block_alone_changes_no_key_or_hash(folder, tmp_path):
    old = {"models": ["m"], "probes": ["piqa"], "limit": 2, "recipes": [PRUNE]}
    spec = spec_from_dict(old)
    assert spec.spec_hash() == "8dd5334235aad1d8"  # the hash every earlier knowcomp gave it
    with_block = spec_from_dict({**old, "recovery": {"tokens": 4096, "seqlen": 128}})
    assert with_block.spec_hash() == spec.spec_hash()
    assert [t.key for t in expand(with_block)] == [t.key for t in expand(spec)]
    assert not with_block.recovers and with_block.adapters_folder() is None
    # with a recover step, the training settings are part of the recovered trial's key only
    recovered = spec_from_dict({**old, "recipes": [{"recipe": PRUNE, "recover": "lora"}]})
    bigger = spec_from_dict({**old, "recipes": [{"recipe": PRUNE, "recover": "lora"}],
                             "recovery": {"tokens": 65536}})  # fmt: skip
    a, b = expand(recovered), expand(bigger)
    assert [t.key for t in a[:2]] == [t.key for t in expand(spec)]
    assert a[2].key != b[2].key and recovered.spec_hash() != bigger.spec_hash()
    same = spec_from_dict({**old, "recipes": [{"recipe": PRUNE, "recover": "lora:r=8"}]})
    assert expand(same)[2].key == a[2].key  # a default option written out is the same method


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipes": [{"recipe": PRUNE, "recover": "adapterx"}]},
         "recipe sweep 'prune:l1_unstructured:overall:0.5': recover: unknown recovery method "
         "'adapterx'"),
        ({"recipes": [{"recipe": PRUNE, "recover": "lora:rank=4"}]}, "unknown option 'rank=4'"),
        ({"recipes": [{"recipe": PRUNE, "recover": "idp:prompts=1"}]},
         "prompts must be at least 2"),
        ({"recipes": [{"recipe": PRUNE, "recover": [3]}]}, "recover takes a method"),
        ({"recovery": {"tokens": 16, "seqlen": 32}}, "less than one block of seqlen 32"),
        ({"recovery": {"tokens": "32k"}}, "recovery: 'tokens' must be a positive integer"),
        ({"recovery": {"batch_size": 0}}, "recovery: 'batch_size' must be a positive integer"),
        ({"recovery": {"epochs": 2}}, "unknown recovery key(s) epochs"),
        ({"recovery": "lots"}, "'recovery' must be a mapping"),
        ({"recovery": {"save_adapters": "yes"}}, "'save_adapters' is true or false"),
        ({"recovery": {"calibration": "/no/such/corpus.txt"}}, "does not exist"),
        ({"recovery": {"calibration": "data:wikipedia"}}, "unknown dataset wikipedia"),
        ({"recipes": [{"recipe": "quant:dynamic_int8:attention", "recover": "lora"}]},
         "torch.ao dynamic int8"),
        ({"recipes": [{"preset": "global-quantization", "recover": "lora"}]},
         "torch.ao dynamic int8"),
        ({"models": ["BERT"], "probes": ["lama-trex"]}, "need a decoder"),
    ],
)  # fmt: skip
def test_bad_recovery_specs_fail_in_one_line_before_any_work(folder, tmp_path, change, message):
    out = tmp_path / "r.sqlite"
    data = _spec(folder, out)
    for key, value in change.items():
        if key == "recovery" and isinstance(value, dict):
            value = {**data["recovery"], **value}
        data[key] = [str(folder / "bert")] if value == ["BERT"] else value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_dry_run_lists_the_recovered_trials(folder, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_spec(folder, tmp_path / "r.sqlite")))
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run", "--no-estimate"])
    assert result.exit_code == 0, result.output
    assert "4 trials x 3 probes" in result.output
    assert f"{PRUNE} + prompt:tokens=2:lr=0.05" in result.output
    assert f"{PRUNE} + lora:lr=0.01" in result.output


def test_the_worker_refuses_recovery_on_an_encoder_in_one_line(folder):
    """Where the family could not be read before loading, the trial fails when it runs."""
    from knowcomp.study.worker import ModelWorker

    trial = Trial(str(folder / "bert"), "prune", PRUNE, None, 0, 1, "next-token", "float32",
                  recover="lora", train=json.dumps({"tokens": 64, "seqlen": 32, "batch_size": 4,
                                    "calibration": str(folder / "corpus.txt")}))  # fmt: skip
    worker = ModelWorker(str(folder / "bert"))
    with pytest.raises(RecoveryError, match=r"^trial prune \+ lora on .*bert: .*needs a decoder"):
        worker.run(trial, [], study="s", spec_hash="h")


# -- running ----------------------------------------------------------------------------------
class _Outcomes(RunListener):
    def __init__(self) -> None:
        self.outcomes: list[TrialOutcome] = []
        self.bars: list[tuple[str, int]] = []

    def probe_started(self, probe: str, total: int):
        self.bars.append((probe, total))
        return None

    def trial_finished(self, trial, outcome) -> None:
        self.outcomes.append(outcome)


@pytest.mark.integration
@needs_data
def test_a_study_with_recovery_runs_stores_resumes_and_reports(folder, tmp_path, monkeypatch):
    from knowcomp.compress import CompressionSession
    from knowcomp.recovery import methods

    applied = []
    original = CompressionSession.apply

    def counting(self, recipe, **kwargs):
        applied.append(recipe.to_compact())
        return original(self, recipe, **kwargs)

    monkeypatch.setattr(CompressionSession, "apply", counting)
    spec = spec_from_dict(_spec(folder, tmp_path / "r.sqlite"))
    listener = _Outcomes()
    summary = run_study(spec, listener=listener)
    assert (summary.ran, summary.rows_added) == (4, 12)
    assert len(applied) == 1  # the compressed trial and both recovered trials: one compression
    assert ("training prompt:tokens=2:lr=0.05", 256) in listener.bars  # progress per token
    with ResultsStore(spec.output) as store:
        trials = {(t["recipe"], (t["recovery"] or {}).get("label")): t for t in store.trials()}
    assert set(trials) == {(None, None), (PRUNE, None), (PRUNE, PROMPT), (PRUNE, LORA)}
    prompt = trials[(PRUNE, PROMPT)]
    info = prompt["recovery"]
    assert info["method"] == "prompt"
    assert info["settings"] == "prompt:tokens=2:init=vocab:lr=0.05:weight_decay=0.0"
    assert info["trainable_params"] == 2 * 32  # two virtual tokens x hidden size 32
    assert info["log"]["tokens"] == 256 and info["log"]["steps"] == 2
    assert info["log"]["first_loss"] > 0 and info["log"]["seconds"] >= 0
    assert info["train"] == {"tokens": 256, "seqlen": 32, "batch_size": 4,
                             "calibration": str(folder / "corpus.txt"), "seed": 0}  # fmt: skip
    assert not info["reused"]
    assert prompt["sparsity"] == trials[(PRUNE, None)]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert trials[(PRUNE, LORA)]["recovery"]["trainable_params"] > info["trainable_params"]
    assert trials[(PRUNE, None)]["recovery"] is None
    saved = Path(info["adapter"])
    assert saved == tmp_path / "r-adapters" / prompt["trial_key"]
    assert (saved / "knowcomp-recovery.json").is_file()

    # a rerun skips everything; a new probe reruns every trial for it, loading the adapters
    assert run_study(spec).ran == 0

    def refuse(*args, **kwargs):
        raise AssertionError("a saved adapter should be reused, not trained again")

    monkeypatch.setattr(methods, "TRAINERS", {name: refuse for name in methods.TRAINERS})
    again = _Outcomes()
    more = spec_from_dict(_spec(folder, spec.output, probes=["arc-easy", "piqa", "winogrande",
                                                              "arc-challenge"]))  # fmt: skip
    summary = run_study(more, listener=again)
    assert (summary.ran, summary.rows_added) == (4, 4)
    reused = [o.trial["recovery"] for o in again.outcomes if o.trial["recovery"]]
    assert len(reused) == 2 and all(r["reused"] for r in reused)
    assert reused[0]["trainable_params"] == info["trainable_params"]

    # the results command shows the recovery method
    table = CliRunner().invoke(cli, ["results", str(spec.output), "--probe", "piqa"])
    assert table.exit_code == 0 and "prune + prompt" in table.output

    # the report: a recovery table and a training table, in every format and in report.html
    from knowcomp.report import generate_report

    report = generate_report(spec.output, tmp_path / "report")
    names = [t.name for t in report.tables]
    assert "recovery" in names and "recovery_training" in names
    tables = tmp_path / "report" / "tables"
    markdown = (tables / "recovery.md").read_text()
    header = "| arc-challenge | arc-easy | piqa | winogrande | World | Common | Language |"
    assert header in markdown
    assert "Recovered share" in markdown
    for label in ("uncompressed", f"| {PRUNE} | – |", "| prompt:tokens=2:lr=0.05 |",
                  "| lora:lr=0.01 |"):  # fmt: skip
        assert label in markdown
    rows = list(csv.reader((tables / "recovery_training.csv").open()))
    assert rows[0][:5] == ["Model", "Compression", "Recovery", "Settings", "Trainable params"]
    assert {r[2] for r in rows[1:]} == {PROMPT, LORA}
    assert (tables / "recovery.tex").is_file()
    page = report.html.read_text()
    assert "Compression and recovery" in page and "Trainable params" in page
    assert "<a href='#recovery'>" in page and "<h3 id='recovery'>" in page
    # the first study's tables and drops count the compressed trial only
    drops = list(csv.DictReader((tmp_path / "report" / "drops.csv").open()))
    assert len(drops) == 4 and {d["recipe"] for d in drops} == {PRUNE}


@pytest.mark.integration
@needs_data
def test_adapters_can_be_left_unsaved(folder, tmp_path):
    data = _spec(folder, tmp_path / "r.sqlite", probes=["piqa"],
                 recipes=[{"recipe": PRUNE, "recover": PROMPT}])  # fmt: skip
    data["recovery"]["save_adapters"] = False
    spec = spec_from_dict(data)
    assert spec.adapters_folder() is None
    run_study(spec)
    with ResultsStore(spec.output) as store:
        info = next(t["recovery"] for t in store.trials() if t["recovery"])
    assert info["adapter"] is None
    assert not (tmp_path / "r-adapters").exists()


# -- the store and the report, with known numbers -------------------------------------------------
def _row(key: str, recipe: str | None, recovery: dict | None = None, seed: int = 0) -> dict:
    return {"trial_key": key, "study": "s", "spec_hash": "h", "model": "m", "sweep": "s",
            "recipe": recipe, "seed": seed, "lama_mode": "next-token", "dtype": "float32",
            "limit_items": 10, "sparsity": 0.5 if recipe else 0.0, "params_model": 10_000,
            "recovery": recovery}  # fmt: skip


def _results(arc: float, piqa: float, wino: float) -> list[dict]:
    def mc(value: float) -> dict:
        return {"acc": value - 0.05, "acc_norm": value, "majority": 0.5}

    return [
        {"probe": "arc-easy", "category": "world_knowledge", "metrics": mc(arc), "counts": {}},
        {"probe": "piqa", "category": "common_reasoning", "metrics": mc(piqa), "counts": {}},
        {"probe": "winogrande", "category": "language_understanding",
         "metrics": {"acc": wino, "majority": 0.5}, "counts": {}},
    ]  # fmt: skip


def _recovery(label: str, params: int, first: float, last: float) -> dict:
    return {"method": label.split(":")[0], "label": label, "settings": label,
            "trainable_params": params, "train": {}, "reused": False, "adapter": None,
            "log": {"tokens": 1024, "steps": 8, "seconds": 12.0, "first_loss": first,
                    "last_loss": last}}  # fmt: skip


def test_the_recovery_table_has_the_studys_layout_and_the_recovered_share(tmp_path):
    from knowcomp.report import load_frame
    from knowcomp.report.table import to_csv, to_latex, to_markdown
    from knowcomp.report.tables import build_tables

    db = tmp_path / "r.sqlite"
    with ResultsStore(db) as store:
        store.write(TrialOutcome(_row("b", None), _results(0.60, 0.70, 0.50)))
        store.write(TrialOutcome(_row("c", PRUNE), _results(0.30, 0.40, 0.50)))  # avg 0.4
        lora = _recovery("lora", 2048, 3.0, 2.0)
        store.write(TrialOutcome(_row("l", PRUNE, lora), _results(0.45, 0.55, 0.50)))  # 0.5
        idp = _recovery("idp:prompts=4", 640, 4.0, 3.5)
        store.write(TrialOutcome(_row("i", PRUNE, idp), _results(0.30, 0.40, 0.35)))  # 0.35
        frame = load_frame(store, choice_metric="acc_norm")  # acc is the default headline
        plain = load_frame(store)
    first = {t.name: t for t in build_tables(plain)}["recovery"].rows[0][1]
    assert [round(c.mean, 6) for c in first[:2]] == [55, 65]  # acc
    assert len(frame.points) == 3 and len(frame.recovered) == 6  # kept apart
    tables = {t.name: t for t in build_tables(frame)}
    main = tables["recovery"]
    assert main.probes == ["arc-easy", "piqa", "winogrande", "World", "Common", "Language",
                           "Average", "Recovered share"]  # fmt: skip
    rows = {tuple(labels[1:]): cells for labels, cells in main.rows}
    assert list(rows) == [("uncompressed", "–"), (PRUNE, "–"), (PRUNE, "lora"),
                          (PRUNE, "idp:prompts=4")]  # fmt: skip
    means = {k: [None if c is None else round(c.mean, 6) for c in v] for k, v in rows.items()}
    assert means[("uncompressed", "–")] == [60, 70, 50, 60, 70, 50, 60, None]  # acc_norm
    assert means[(PRUNE, "–")] == [30, 40, 50, 30, 40, 50, 40, None]
    assert means[(PRUNE, "lora")] == [45, 55, 50, 45, 55, 50, 50, 50]  # (50-40)/(60-40)
    assert means[(PRUNE, "idp:prompts=4")][-1] == -25  # recovery that made it worse
    training = {tuple(labels[2:3]): cells for labels, cells in tables["recovery_training"].rows}
    assert training[("lora",)] == ["2,048", "20.480", "1,024", "8", "3.000", "2.000", "12"]
    assert "| m | uncompressed | – |" in to_markdown(main)
    assert "idp:prompts=4,idp:prompts=4,640" in to_csv(tables["recovery_training"])
    assert r"Recovered share \\" in to_latex(main)


def test_a_results_file_from_before_recovery_opens_and_gains_the_column(tmp_path):
    db = tmp_path / "old.sqlite"
    results_file_without(db, "recovery")
    with ResultsStore(db) as store:
        [trial] = store.trials()
        assert trial["recovery"] is None
        store.write(TrialOutcome(_row("r", PRUNE, _recovery("lora", 1, 1.0, 0.5)), []))
        assert {t["trial_key"]: t["recovery"] is not None for t in store.trials()} == {
            "k": False, "r": True}  # fmt: skip


# -- the preset -------------------------------------------------------------------------------
def test_the_forget_recover_preset_expands_and_validates(folder):
    from knowcomp.probes.categories import STUDY_TASKS
    from knowcomp.study.presets import PRESETS

    spec = preset_spec("forget-recover", (str(folder / "model"),))
    assert spec.probes == STUDY_TASKS and spec.limit == PRESETS["forget-recover"].limit
    assert spec.recovery.calibration == "data:boolq,sciq"
    trials = validate(spec)
    assert len(trials) == 1 + 2 * (1 + 2)
    assert [t.method for t in trials[1:4]] == [None, "lora", "idp"]
    assert json.loads(trials[2].train)["tokens"] == spec.recovery.tokens
    assert {t.recipe for t in trials[1:]} == {"quant:gptq:overall:bits=4",
                                              "prune:sparsegpt:overall:0.5"}  # fmt: skip
    assert len({t.key for t in trials}) == len(trials)
    with pytest.raises(SpecError, match="decoder"):  # its probes, or its recover steps
        validate(preset_spec("forget-recover", (str(folder / "bert"),)))
    listed = CliRunner().invoke(cli, ["run", "--list-presets"])
    assert "forget-recover" in listed.output


def test_the_spec_in_the_docs_is_valid(folder):
    import re

    docs = (Path(__file__).resolve().parents[1] / "docs" / "studies.md").read_text()
    section = docs.split("## Recovery steps", 1)[1]
    data = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    data["models"] = [str(folder / "model")]
    trials = validate(spec_from_dict(data))
    assert len(trials) == 1 + (1 + 4) + (1 + 1) + 2 * 9 * (1 + 1)
    assert {t.method for t in trials} == {None, "lora", "prompt", "prefix", "idp:tokens=26+100",
                                          "lora:group=overall"}  # fmt: skip


def test_recovery_tokens_on_the_command_line(folder):
    from knowcomp.cli.run_cmd import _build_spec

    model = (str(folder / "model"),)
    spec = _build_spec(None, "forget-recover", model, None, 3, None, None, None, 1024)
    assert spec.recovery.tokens == 1024 and spec.limit == 3
    assert json.loads(expand(spec)[2].train)["tokens"] == 1024
    result = CliRunner().invoke(cli, ["run", "--preset", "forget-recover", "--model", model[0],
                                      "--recovery-tokens", "100", "--dry-run"])  # fmt: skip
    assert result.exit_code == 2 and "less than one block of seqlen 256" in result.output


def test_the_example_recovery_study_is_valid():
    from knowcomp.study import load_spec
    from knowcomp.study.trials import validate

    spec = load_spec(Path(__file__).parent.parent / "examples" / "sparsegpt-recover.yaml")
    trials = validate(spec)
    assert [t.recover for t in trials] == [None, None, "lora", "idp"]


@needs_data
@pytest.mark.integration
def test_a_study_sweeps_prompt_lengths_and_runs_the_idp_ablation(folder, tmp_path):
    """`vary: tokens` over a prompt method, and `recovery: {ablation: true}`: the IDP trial
    stores each prompt alone, their concatenation and IDP, and the report writes Table 3."""
    data = _spec(folder, tmp_path / "a.sqlite", probes=["piqa"], recipes=[
        {"name": "lengths", "recipe": PRUNE, "vary": "tokens", "levels": [1, 2],
         "recover": ["prompt:tokens={tokens}:lr=0.05", "idp:tokens=1+2:lr=0.05"]}])  # fmt: skip
    data["recovery"]["ablation"] = True
    spec = spec_from_dict(data)
    assert spec.spec_hash() != spec_from_dict({**data, "recovery": {
        k: v for k, v in data["recovery"].items() if k != "ablation"}}).spec_hash()  # fmt: skip
    summary = run_study(spec)
    assert summary.ran == 5  # baseline, compressed, two prompt lengths, IDP
    with ResultsStore(spec.output) as store:
        trials = {(t["recovery"] or {}).get("label"): t for t in store.trials()}
        records = {r["trial_key"]: r for r in store.rows()}
    assert {"prompt:tokens=1:lr=0.05", "prompt:tokens=2:lr=0.05"} <= set(trials)
    assert trials["prompt:tokens=1:lr=0.05"]["level"] == 1
    assert "ablation" not in trials["prompt:tokens=1:lr=0.05"]["recovery"]
    idp = trials["idp:tokens=1+2:lr=0.05"]
    ablation = idp["recovery"]["ablation"]
    assert list(ablation) == ["prompt 1 alone (1 tokens)", "prompt 2 alone (2 tokens)",
                              "concatenation (1+2 tokens)", "IDP"]  # fmt: skip
    assert ablation["IDP"]["piqa"] == records[idp["trial_key"]]["metrics"]  # the trial's own
    from knowcomp.report import generate_report

    report = generate_report(spec.output, tmp_path / "report")
    table = next(t for t in report.tables if t.name == "hoang2024-table3")
    assert [labels[3] for labels, _ in table.rows] == list(ablation)
    assert table.rows[-1][1][0].mean == pytest.approx(100 * ablation["IDP"]["piqa"]["acc"])
    assert (tmp_path / "report" / "tables" / "hoang2024-table3.tex").is_file()
