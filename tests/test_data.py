"""The data layer against the real evaluation data mirror: import, verify, load, list."""

from __future__ import annotations

import bz2
import hashlib
import shutil
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from knowcomp.data import (
    DatasetStatus,
    ImportVerificationError,
    check_dataset,
    datasets,
    get_dataset,
    import_mirror,
    load,
    load_conceptnet_subset,
    load_google_re,
    load_hellaswag,
    load_lama_facts,
    load_lambada,
    load_multiple_choice,
    load_relation_templates,
    load_sciq,
    load_squad_cloze,
    load_trex_evidence,
    load_triviaqa,
    load_webquestions,
    load_winogrande,
    verify_checksums,
)
from knowcomp.data.manifest import read_manifest
from knowcomp.errors import DataError, KnowcompError

MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = pytest.mark.skipif(
    not (MIRROR / "SHA256SUMS").is_file(),
    reason=f"the evaluation data mirror is not at {MIRROR} (see shared/data/PROVENANCE.md)",
)

# Row counts as PROVENANCE.md publishes them, kept apart from the catalog to check it.
PUBLISHED_ROWS = {
    "lama-trex": 29_411,
    "lama-trex-evidence": 22_881,
    "lama-google-re": 5_528,
    "lama-squad": 305,
    "lama-conceptnet-subset": 146,
    "lama-relations": 46,
    "boolq": 3_270,
    "piqa": 1_838,
    "winogrande": 1_267,
    "arc-easy": 2_376,
    "arc-challenge": 1_172,
    "lambada": 5_153,
    "hellaswag": 10_042,
    "sciq": 1_000,
    "triviaqa": 3_000,
    "webqs": 2_032,
}
MIRROR_FILES = 85


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    """The mirror copied once into a fresh data directory, with the import's report."""
    dest = tmp_path_factory.mktemp("data")
    return dest, import_mirror(MIRROR, dest)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_mirror(root: Path, files: dict[str, bytes]) -> Path:
    """A mirror holding `files`, with a SHA256SUMS that matches them."""
    lines = []
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
        lines.append(f"{_sha(content)}  ./{rel}\n")
    (root / "SHA256SUMS").write_text("".join(lines))
    return root


# --- catalog ---------------------------------------------------------------------------------


def test_catalog_matches_published_sizes_and_names():
    assert {d.name: d.rows for d in datasets()} == PUBLISHED_ROWS
    assert sum(len(d.files) for d in datasets()) == MIRROR_FILES == len(read_manifest(MIRROR))
    assert set(read_manifest(MIRROR)) == {rel for d in datasets() for rel in d.files}


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError, match=r"known datasets: lama-trex, .*webqs"):
        get_dataset("lama-t-rex")
    with pytest.raises(DataError, match="use lama-conceptnet-subset"):
        get_dataset("lama-conceptnet")


# --- import ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_import_verifies_every_checksum_and_row_count(imported):
    dest, report = imported
    assert report.ok
    assert report.count("copied") == MIRROR_FILES == len(report.files)
    assert {s.name: s.rows_found for s in report.datasets} == PUBLISHED_ROWS
    assert all(s.state == "ok" and s.present for s in report.datasets)
    assert (dest / "SHA256SUMS").is_file() and (dest / "PROVENANCE.md").is_file()
    assert verify_checksums(dest) == MIRROR_FILES
    assert not any(p.is_symlink() for p in dest.rglob("*"))


@pytest.mark.integration
def test_reimport_is_idempotent(imported):
    dest, _ = imported
    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    again = import_mirror(MIRROR, dest)
    assert again.count("skipped") == MIRROR_FILES and again.ok
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()} == stamps


@pytest.mark.integration
def test_link_import_and_repair_of_a_damaged_file(tmp_path):
    report = import_mirror(MIRROR, tmp_path, link=True)
    assert report.count("linked") == MIRROR_FILES
    squad = tmp_path / "lama" / "squad" / "test.jsonl"
    assert squad.is_symlink()

    squad.unlink()
    squad.write_bytes((MIRROR / "lama/squad/test.jsonl").read_bytes()[:-10])
    with pytest.raises(DataError, match=r"checksum mismatch for lama/squad/test\.jsonl"):
        verify_checksums(tmp_path)

    repaired = import_mirror(MIRROR, tmp_path, link=True)
    assert repaired.count("replaced") == 1 and repaired.count("skipped") == MIRROR_FILES - 1
    assert verify_checksums(tmp_path) == MIRROR_FILES


def test_corrupted_mirror_file_fails_its_checksum_by_name(tmp_path):
    rel = "lama/squad/test.jsonl"
    damaged = (MIRROR / rel).read_bytes().replace(b"gold", b"gild", 1)
    src = _fake_mirror(tmp_path / "mirror", {rel: damaged})
    real_sums = (MIRROR / "SHA256SUMS").read_text().splitlines()
    (src / "SHA256SUMS").write_text(next(line for line in real_sums if rel in line) + "\n")

    with pytest.raises(DataError) as err:
        import_mirror(src, tmp_path / "dest")
    message = str(err.value)
    assert "checksum mismatch for lama/squad/test.jsonl" in message
    assert "fix:" in message
    assert not (tmp_path / "dest" / "lama" / "squad" / "test.jsonl").exists()


def test_import_of_a_missing_or_bare_folder_is_a_named_error(tmp_path):
    with pytest.raises(DataError, match=r"mirror folder .*nowhere does not exist.*fix:"):
        import_mirror(tmp_path / "nowhere", tmp_path / "dest")
    with pytest.raises(DataError, match=r"has no SHA256SUMS.*fix:"):
        import_mirror(tmp_path, tmp_path / "dest")
    listed = _fake_mirror(tmp_path / "m", {"mc/piqa.jsonl": b"{}\n"})
    (listed / "mc" / "piqa.jsonl").unlink()
    with pytest.raises(DataError, match=r"mc/piqa\.jsonl is listed in .* but missing"):
        import_mirror(listed, tmp_path / "dest")


def test_rows_that_disagree_with_the_catalog_fail_the_import(tmp_path):
    boolq = (MIRROR / "mc" / "boolq.jsonl").read_bytes()
    short = b"".join(boolq.splitlines(keepends=True)[:10])
    src = _fake_mirror(tmp_path / "mirror", {"mc/boolq.jsonl": short})
    with pytest.raises(ImportVerificationError, match="boolq has 10 rows, 3270 expected") as err:
        import_mirror(src, tmp_path / "dest")
    states = {s.name: s.state for s in err.value.report.datasets}
    assert states["boolq"] == "rows differ" and states["piqa"] == "missing"


@pytest.mark.integration
def test_importing_a_folder_onto_itself_only_verifies(imported):
    dest, _ = imported
    report = import_mirror(dest, dest)
    assert report.count("verified") == MIRROR_FILES and report.ok


# --- loaders ---------------------------------------------------------------------------------

LOADERS = {
    "lama-trex": load_lama_facts,
    "lama-trex-evidence": load_trex_evidence,
    "lama-google-re": load_google_re,
    "lama-squad": load_squad_cloze,
    "lama-conceptnet-subset": load_conceptnet_subset,
    "lama-relations": load_relation_templates,
    "boolq": lambda root: load_multiple_choice("boolq", root),
    "piqa": lambda root: load_multiple_choice("piqa", root),
    "arc-easy": lambda root: load_multiple_choice("arc-easy", root),
    "arc-challenge": lambda root: load_multiple_choice("arc-challenge", root),
    "winogrande": load_winogrande,
    "lambada": load_lambada,
    "hellaswag": load_hellaswag,
    "sciq": load_sciq,
    "triviaqa": load_triviaqa,
    "webqs": load_webquestions,
}

FIRST = {
    "lama-trex": dict(relation="P17", sub_label="Eibenstock", obj_label="Germany"),
    "lama-trex-evidence": dict(relation="P19", sub_label="Allan Peiper", obj_label="Alexandra"),
    "lama-google-re": dict(relation="place_of_birth", obj_label="Lebanon"),
    "lama-squad": dict(obj_label="gold", sub_label="Squad"),
    "lama-conceptnet-subset": dict(relation="HasPrerequisite", obj_label="concentration"),
    "lama-relations": dict(relation="P19", template="[X] was born in [Y] .", type="N-1"),
    "boolq": dict(choices=("no", "yes"), gold=0),
    "piqa": dict(gold=0),
    "arc-easy": dict(gold=0),
    "arc-challenge": dict(gold=2),
    "winogrande": dict(continuation="always got the easier cases.", gold=1),
    "lambada": dict(continuation="signs"),
    "hellaswag": dict(activity_label="Roof shingle removal", gold=3),
    "sciq": dict(correct_answer="oxidants", distractors=("antioxidants", "Oxygen", "residues")),
    "triviaqa": dict(answer="Onion"),
    "webqs": dict(qid="wqs000000", question="what does jamaican people speak?"),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", list(LOADERS))
def test_each_loader_reads_its_documented_rows(imported, name):
    dest, _ = imported
    stream = LOADERS[name](dest)
    records = list(stream)
    assert len(records) == stream.rows == PUBLISHED_ROWS[name]
    assert stream.skipped == []
    first = records[0]
    for field, value in FIRST[name].items():
        assert getattr(first, field) == value, field
    assert type(first) is type(next(iter(load(name, dest))))


def test_record_details(imported):
    dest, _ = imported
    evidence = next(iter(load_trex_evidence(dest)))
    assert evidence.masked_sentence == evidence.masked_sentences[0]
    assert "[MASK]" in evidence.masked_sentence
    google = next(iter(load_google_re(dest)))
    assert google.judgments[0].judgment == "no" and google.yes_votes == 4
    swag = list(load_hellaswag(dest))
    assert all(len(item.endings) == 4 and 0 <= item.gold < 4 for item in swag)
    assert swag[0].query == "Roof shingle removal: A man is sitting on a roof. he"
    assert sum(1 for item in load_sciq(dest) if item.support) == 884
    assert next(iter(load_triviaqa(dest))).question.startswith("Brunswick, Lancastrian")


def test_relation_filter(imported):
    dest, _ = imported
    assert load_lama_facts(dest, relations=["P19"]).count() == 779
    per_relation = {r: load_google_re(dest, relations=[r]).count() for r in ("place_of_birth",)}
    assert per_relation == {"place_of_birth": 2937}
    with pytest.raises(DataError, match="no relation 'P999'"):
        load_lama_facts(dest, relations=["P999"])


def test_wrong_loader_for_a_dataset_is_an_error(imported):
    with pytest.raises(DataError, match="not 'multiple-choice'"):
        load_multiple_choice("hellaswag", imported[0])


# --- malformed and missing data --------------------------------------------------------------

GOOD_MC = b'{"query": "Q", "choices": ["a", "b"], "gold": 1}\n'
GOOD_SWAG = "Label: a context\n0\none\ntwo\nthree\nfour\n"
SCIQ_HEADER = (
    "question,support,correct_answer,ref_distractor1,ref_distractor2,ref_distractor3,"
    "sys_distractor1,sys_distractor2,sys_distractor3\n"
)

MALFORMED = {
    # dataset: (file, content, lines of the bad items, good items)
    "boolq": (
        "mc/boolq.jsonl",
        GOOD_MC + b'{"query": "Q", "choices": ["a"\n' + GOOD_MC.replace(b"1}", b"5}") + GOOD_MC,
        [2, 3],
        2,
    ),
    "hellaswag": (
        "mc/hellaswag/hellaswag_val_full.txt.bz2",
        bz2.compress((GOOD_SWAG + GOOD_SWAG.replace("\n0\n", "\nx\n") + GOOD_SWAG).encode()),
        [7],
        2,
    ),
    "sciq": (
        "mc/sciq_test.csv",
        (SCIQ_HEADER + "q,s,a,b,c,d,e,f,g\n" + "q,s,a,b\n" + '"q\nmore",,a,b,c,d,e,f,g\n').encode(),
        [3],
        2,
    ),
    "webqs": (
        "qa/webquestions_test.json",
        b'[\n {"qId": "1", "qText": "q", "answers": ["a"]},\n {"qId": 2},\n'
        b' {"qId": "3", "qText": "q", "answers": ["a"]}\n]\n',
        [3],
        2,
    ),
    "lama-squad": (
        "lama/squad/test.jsonl",
        b'{"id": "1", "sub_label": "Squad", "obj_label": "x", "masked_sentences": ["[MASK]"]}\n'
        b"\xff\xfe not utf-8\n",
        [2],
        1,
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_line_raises_with_file_and_line_or_is_skipped(tmp_path, name):
    rel, content, bad_lines, good = MALFORMED[name]
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes(content)

    with pytest.raises(DataError) as err:
        list(load(name, tmp_path))
    assert f"{tmp_path / rel}, line {bad_lines[0]}: malformed {name} record" in str(err.value)
    assert "skip_malformed=True" in str(err.value)

    stream = load(name, tmp_path, skip_malformed=True)
    assert len(list(stream)) == good == stream.rows
    assert [s.line for s in stream.skipped] == bad_lines
    assert check_dataset(name, tmp_path).malformed == len(bad_lines)


def test_missing_dataset_names_dataset_path_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_multiple_choice("piqa", tmp_path)
    message = str(err.value)
    assert "dataset 'piqa' is missing" in message
    assert str(tmp_path / "mc" / "piqa.jsonl") in message
    assert "knowcomp data import PATH" in message

    status = check_dataset("piqa", tmp_path)
    assert isinstance(status, DatasetStatus)
    assert (status.state, status.present, status.rows_found) == ("missing", False, None)


def test_partly_present_dataset_is_incomplete(tmp_path):
    rel = "lama/trex_facts/P19.jsonl"
    (tmp_path / rel).parent.mkdir(parents=True)
    shutil.copy(MIRROR / rel, tmp_path / rel)
    with pytest.raises(DataError, match="40 of its 41 files are not in the data directory"):
        load_lama_facts(tmp_path)
    assert load_lama_facts(tmp_path, relations=["P19"]).count() == 779
    status = check_dataset("lama-trex", tmp_path)
    assert (status.state, status.files_found, status.rows_found) == ("incomplete", 1, 779)


# --- command line ----------------------------------------------------------------------------


def _cli() -> click.Group:
    """The real `knowcomp` group; the data group wrapped like it if main cannot import yet."""
    try:
        from knowcomp.cli.main import cli
    except ImportError:
        from knowcomp.cli.data_cmd import data

        class _Wrapped(click.Group):
            def invoke(self, ctx: click.Context):
                try:
                    return super().invoke(ctx)
                except KnowcompError as err:
                    click.echo(f"error: {err}", err=True)
                    sys.exit(2)

        cli = _Wrapped(commands={"data": data})
    return cli


@pytest.mark.integration
def test_cli_data_list(imported):
    dest, _ = imported
    result = CliRunner().invoke(_cli(), ["data", "list"], env={"KNOWCOMP_DATA": str(dest)})
    assert result.exit_code == 0, result.output
    for name in PUBLISHED_ROWS:
        assert name in result.stdout
    assert "29,411" in result.stdout and "present" in result.stdout
    assert "missing" not in result.stdout


def test_cli_data_list_on_an_empty_directory(tmp_path):
    result = CliRunner().invoke(_cli(), ["data", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "16 dataset(s) missing" in result.stdout


@pytest.mark.integration
def test_cli_data_import(tmp_path):
    dest = tmp_path / "data"
    args = ["data", "import", str(MIRROR), "--link"]
    result = CliRunner().invoke(_cli(), args, env={"KNOWCOMP_DATA": str(dest)})
    assert result.exit_code == 0, result.output
    assert f"{MIRROR_FILES} linked" in result.stdout
    assert "lama-conceptnet-subset" in result.stdout and "10,042" in result.stdout
    assert check_dataset("hellaswag", dest).ok


def test_cli_data_import_of_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(_cli(), ["data", "import", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mirror folder")
    assert "nowhere" in lines[0] and "Traceback" not in result.output


def test_a_file_read_to_the_end_is_remembered_until_it_changes(tmp_path):
    rel, content, bad_lines, good = MALFORMED["lama-squad"]
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    first = load("lama-squad", tmp_path, skip_malformed=True)
    records = list(first)
    again = load("lama-squad", tmp_path, skip_malformed=True)
    assert list(again) == records and again.rows == good
    assert [s.line for s in again.skipped] == bad_lines  # the skipped lines are remembered too
    # the second stream served the parsed records: the same objects, not a second parse
    assert all(a is b for a, b in zip(list(load("lama-squad", tmp_path, skip_malformed=True)),
                                      records, strict=True))  # fmt: skip
    # a changed file (another size and time) is read again
    line = b'{"id": "2", "sub_label": "New", "obj_label": "y", "masked_sentences": ["[MASK]"]}\n'
    path.write_bytes(content + line)
    changed = list(load("lama-squad", tmp_path, skip_malformed=True))
    assert len(changed) == good + 1 and changed[-1].obj_label == "y"
    # without skip_malformed the bad line still raises: a remembered skip never hides it
    with pytest.raises(DataError):
        list(load("lama-squad", tmp_path))
