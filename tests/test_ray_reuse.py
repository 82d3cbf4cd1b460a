"""Prefix reuse on Ray: `--reuse-memory` reaches the actors (a budget other than the default
applies there, 0 turns reuse off), and an actor that did not run the baseline still reuses from
its second final-layer trial on. A real local Ray, started in this process on its own temp
folder and shut down by the test (no `ray stop`: it would stop every Ray on the machine)."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import pytest

from knowcomp.store import ResultsStore
from knowcomp.study import run_study
from knowcomp.study.spec import spec_from_dict
from tests.conftest import save_tiny_llama, smollm2_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [
    pytest.mark.real_model,  # the tiny model borrows SmolLM2's tokenizer
    pytest.mark.integration,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here"),
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed"),
]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray started here (its own temp folder; short, for Ray's socket paths)."""
    import ray

    temp = tempfile.mkdtemp(prefix="kc-rr-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _temp_dir=temp)  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _notes(output: Path) -> dict[tuple[float | None, str], str]:
    """The last note of every stored result, by (level, probe)."""
    with ResultsStore(output) as store:
        return {(r["level"], r["probe"]): r["notes"][-1] if r["notes"] else ""
                for r in store.rows()}  # fmt: skip


def _records(output: Path) -> dict[tuple[str, str], list]:
    with ResultsStore(output) as store:
        return {(r["trial_key"], r["probe"]): store.records(r["trial_key"], r["probe"])
                for r in store.rows()}  # fmt: skip


def test_ray_actors_honour_the_reuse_budget(tmp_path, local_ray):
    save_tiny_llama(tmp_path / "m", smollm2_tokenizer(), max_position_embeddings=512,
                    tie_word_embeddings=True)  # fmt: skip
    data = {"name": "final", "models": [str(tmp_path / "m")], "probes": ["lama-trex", "piqa"],
            "limit": 2, "lama_mode": "next-token", "data_dir": str(SHARED_DATA),
            "recipes": [{"name": "final", "recipe": "prune:l1_unstructured:final_layer:{level}",
                         "levels": [0.3, 0.5, 0.7]}]}  # fmt: skip
    outputs = {}
    for name, budget, workers in (("default", None, 2), ("tiny", 1e-4, 1), ("off", 0, 1)):
        spec = spec_from_dict({**data, "output": str(tmp_path / f"{name}.sqlite")})
        summary = run_study(spec, executor="ray", workers_per_model=workers,
                            reuse_budget_mb=budget)  # fmt: skip
        assert summary.ran == 4
        outputs[name] = spec.output
    # Two actors: the baseline and level 0.5 on one (0.5 reuses what the baseline kept), 0.3
    # and 0.7 on the other (0.3 keeps the head inputs it computed, 0.7 reuses them).
    default = _notes(outputs["default"])
    for probe in ("lama-trex", "piqa"):
        assert default[(None, probe)].endswith("MB kept for later trials")
        assert default[(0.3, probe)].startswith("prefix reuse: nothing kept yet")
        assert default[(0.5, probe)].startswith("prefix reuse: the LM head")
        assert default[(0.7, probe)].startswith("prefix reuse: the LM head")
    tiny = _notes(outputs["tiny"])  # 100 bytes: nothing fits, every trial says so
    assert all("budget" in note and "dropped" in note for note in tiny.values())
    off = _notes(outputs["off"])
    assert not any("prefix" in note for note in off.values())
    # the same records whichever way each trial ran
    want = _records(outputs["off"])
    assert _records(outputs["default"]) == want and _records(outputs["tiny"]) == want
