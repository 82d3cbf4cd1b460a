"""The baseline cache: a real cache folder, a tiny real model, real probes and studies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cache import BaselineCache, cached_probe_run
from knowcomp.cache import keys as cache_keys
from knowcomp.cache.fingerprints import weights_hash
from knowcomp.cli.main import cli
from knowcomp.models import load_model
from knowcomp.probes.base import RunOptions
from knowcomp.probes.registry import get_probe
from knowcomp.store import ResultsStore
from knowcomp.study import run_study
from knowcomp.study.spec import spec_from_dict
from tests.conftest import save_tiny_llama

pytestmark = pytest.mark.real_model  # the tiny model borrows SmolLM2's tokenizer

DATA = Path(__file__).parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, load_model("smollm2-135m").tokenizer, max_position_embeddings=512,
                    tie_word_embeddings=True)  # fmt: skip
    return folder


@pytest.fixture
def loaded(model_dir):
    return load_model(str(model_dir))


class CountingProbe:
    """A real probe whose `run` calls are counted (how a test proves a cache hit)."""

    def __init__(self, name: str) -> None:
        self.probe = get_probe(name)
        self.runs = 0
        original = self.probe.run

        def run(loaded, options):
            self.runs += 1
            return original(loaded, options)

        self.probe.run = run  # type: ignore[method-assign]


def _options(**extra) -> RunOptions:
    return RunOptions(**{"limit": 2, "seed": 0, "data_dir": DATA, **extra})


def _notes(messages: list[str]):
    return messages.append


def test_second_run_reads_the_cache_and_equals_the_fresh_result(tmp_path, loaded):
    cache = BaselineCache(tmp_path / "cache", report=_notes([]))
    counting = CountingProbe("piqa")
    steps: list[int] = []
    first = cached_probe_run(loaded, counting.probe, _options(progress=steps.append), cache=cache)
    second = cached_probe_run(loaded, counting.probe, _options(progress=steps.append),
                              cache=cache)  # fmt: skip
    assert counting.runs == 1 and (cache.hits, cache.misses) == (1, 1)
    assert sum(steps) == first.counts["items"]  # a hit scores nothing: no progress
    fresh, reused = first.to_dict(), second.to_dict()
    assert reused.pop("notes")[-1].startswith("read from the baseline cache")
    fresh.pop("notes")
    assert json.loads(json.dumps(fresh)) == reused
    # Other items, or an uncompressed=False caller, run again.
    cached_probe_run(loaded, counting.probe, _options(seed=1), cache=cache)
    cached_probe_run(loaded, counting.probe, _options(), cache=cache, baseline=False)
    assert counting.runs == 3


def test_a_corrupt_entry_is_recomputed_and_replaced(tmp_path, loaded):
    notes: list[str] = []
    cache = BaselineCache(tmp_path / "cache", report=notes.append)
    counting = CountingProbe("lama-trex")
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    (entry,) = list((tmp_path / "cache").glob("*.json"))
    text = entry.read_text()
    entry.write_text(text.replace('"rank":', '"rank":1', 1))  # a payload edit: bad checksum
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    assert counting.runs == 2
    assert notes == [f"baseline cache entry {entry.name} is corrupt (its checksum does not "
                     "match); recomputing it"]  # fmt: skip
    body = lambda t: {**json.loads(t.partition("\n")[2]), "seconds": 0}  # noqa: E731
    assert body(entry.read_text()) == body(text)  # rewritten with the recomputed result
    entry.write_text("not json\n{}")
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    assert counting.runs == 3 and "header is not JSON" in notes[-1]
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    assert counting.runs == 3


def test_other_weights_miss_and_restored_weights_hit(tmp_path, loaded):
    cache = BaselineCache(tmp_path / "cache", report=_notes([]))
    counting = CountingProbe("piqa")
    before = weights_hash(loaded.model)
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    weight = loaded.model.model.layers[0].mlp.up_proj.weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight[0, 0] += 1.0  # in place: the memoized hash sees the tensor's version change
    assert weights_hash(loaded.model) != before
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    assert counting.runs == 2
    with torch.no_grad():
        weight.copy_(kept)
    assert weights_hash(loaded.model) == before
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    assert counting.runs == 2


def test_another_scoring_version_misses_and_lists_as_stale(tmp_path, loaded, monkeypatch):
    cache = BaselineCache(tmp_path / "cache", report=_notes([]))
    counting = CountingProbe("piqa")
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    monkeypatch.setattr(cache_keys, "SCORING_VERSION", cache_keys.SCORING_VERSION + 1)
    cached_probe_run(loaded, counting.probe, _options(), cache=cache)
    assert counting.runs == 2
    states = sorted(e.state for e in cache.entries())
    assert states == ["ok", "stale"]
    assert [e.state for e in cache.clear(stale=True)] == ["stale"]
    assert [e.state for e in cache.entries()] == ["ok"]


def test_an_unwritable_folder_is_one_note_and_the_run_goes_on(tmp_path, loaded):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    notes: list[str] = []
    cache = BaselineCache(blocker / "cache", report=notes.append)  # under a file: cannot exist
    counting = CountingProbe("piqa")
    for _ in range(2):
        result = cached_probe_run(loaded, counting.probe, _options(), cache=cache)
        assert result.counts["items"] == 2
    assert counting.runs == 2 and len(notes) == 1
    assert notes[0].startswith(f"the baseline cache folder {blocker / 'cache'} cannot be written")
    assert "running without it" in notes[0] and "KNOWCOMP_BASELINE_CACHE" in notes[0]


def _study(model: Path, out: Path) -> dict:
    return {"name": "cached", "models": [str(model)], "probes": ["lama-trex", "piqa"], "limit": 1,
            "output": str(out), "data_dir": str(DATA),
            "recipes": [{"name": "prune", "recipe": "prune:l1_unstructured:overall:{level}",
                         "levels": [0.5]}]}  # fmt: skip


def test_a_second_study_reuses_the_first_ones_baselines(tmp_path, model_dir, monkeypatch):
    from knowcomp.cli.run_cmd import _ProgressListener

    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", str(tmp_path / "cache"))
    clocks = []
    for name in ("first", "second"):
        with _ProgressListener(DATA) as listener:
            run_study(spec_from_dict(_study(model_dir, tmp_path / f"{name}.sqlite")),
                      listener=listener)  # fmt: skip
        clocks.append(listener.clock)
    # The study's progress: every trial done; the second study's cached baseline did no work
    first, second = clocks
    assert first.trials_done == second.trials_done == 2
    assert first.done == first.total and second.done == second.total == first.total // 2
    stored = {}
    for name in ("first", "second"):
        with ResultsStore(tmp_path / f"{name}.sqlite") as store:
            stored[name] = {(r["recipe"], r["probe"]): r for r in store.rows()}
    cached = "read from the baseline cache"
    for key, row in stored["second"].items():
        reused = any(note.startswith(cached) for note in row["notes"])
        assert reused == (key[0] is None), key  # the baselines only
        assert row["metrics"] == stored["first"][key]["metrics"]
    assert not any(cached in n for r in stored["first"].values() for n in r["notes"])


def test_eval_reuses_the_cache_and_cache_commands(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", str(tmp_path / "cache"))
    args = ["eval", str(model_dir), "-p", "piqa", "--limit", "2", "--data-dir", str(DATA)]
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    second = runner.invoke(cli, args)
    assert "read from the baseline cache" in second.output
    compressed = runner.invoke(cli, [*args, "--recipe", "prune:l1_unstructured:overall:0.5"])
    assert "read from the baseline cache" not in compressed.output
    listed = runner.invoke(cli, ["cache", "list"])
    assert listed.exit_code == 0 and "piqa" in listed.output and "1 entry" in listed.output
    missing = runner.invoke(cli, ["cache", "clear", "--model", "nothing-like-it"])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1
    cleared = runner.invoke(cli, ["cache", "clear", "--model", str(model_dir)])
    assert cleared.exit_code == 0 and "removed 1 entry" in cleared.output
    assert "no baselines stored" in runner.invoke(cli, ["cache", "list"]).output
    monkeypatch.setenv("KNOWCOMP_BASELINE_CACHE", "off")
    off = runner.invoke(cli, ["cache", "list"])
    assert off.exit_code == 2 and "off" in off.output and off.output.count("\n") == 1
