"""GPU paths tested without a GPU: which device a Ray actor (and the trial it runs) lands on, on a
real local Ray started with fake GPU resources; device maps over several devices, planned by
accelerate on an empty 7B-sized Llama on the `meta` device; a map that would offload to disk,
refused in one line before any weight loads; baselines never compared across dtypes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoConfig, AutoModelForCausalLM

from knowcomp.cli.main import cli
from knowcomp.models.device_map import describe_device_map, plan_device_map
from knowcomp.models.placement import PlacementError
from knowcomp.study.ray_executor import ActorPlacement, actor_class, actor_placement
from tests.conftest import save_tiny_llama
from tests.test_lama import SHARED_DATA
from tests.tokenizer_matrix import build

GIB = 1 << 30
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, vocab_size=32000)  # fmt: skip


# -- Ray actors and trials -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "device_map", "gpus", "expected"),
    [
        ("cpu", None, 0, ActorPlacement(0, "cpu")),
        ("cpu", None, 2, ActorPlacement(1, "cuda")),  # a GPU cluster: each actor on its GPU
        ("cuda:1", None, 4, ActorPlacement(1, "cuda")),  # Ray shows the actor one GPU, cuda:0
        ("cpu", "auto", 2, ActorPlacement(1, "cpu")),  # device ignored: the map spreads layers
        ("mps", None, 2, ActorPlacement(0, "mps")),  # no Ray resource
    ],
)  # fmt: skip
def test_what_an_actor_asks_for_and_where_its_model_runs(device, device_map, gpus, expected):
    assert actor_placement(device, device_map, gpus) == expected


@pytest.fixture(scope="module")
def fake_gpu_ray():
    """A real local Ray (its own cluster, on loopback) that believes the machine has 2 GPUs."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="kc-rg-", dir="/tmp")  # Ray's socket paths must be short
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             log_to_driver=False, configure_logging=False, _temp_dir=temp)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.mark.integration
def test_ray_gives_each_actor_its_own_gpu_and_queues_the_next(fake_gpu_ray):
    ray = fake_gpu_ray
    placement = actor_placement("cpu", None, ray.cluster_resources()["GPU"])
    actors = actor_class(ray, placement, cpus_per_worker=0.25)
    trio = [actors.remote("m", {"device": placement.device}) for _ in range(3)]
    calls = [actor.placement.remote() for actor in trio]
    # Ray creates pending actors in no promised order: whichever two get the GPUs answer
    ready, rest = ray.wait(calls, num_returns=2, timeout=600)
    assert len(ready) == 2, "two actors should have started, one on each fake GPU"
    [waiting] = rest
    a, b = ray.get(ready)
    assert {a["device"], b["device"]} == {"cuda"}
    assert sorted(a["gpu_ids"] + b["gpu_ids"]) == ["0", "1"]  # one GPU each, not shared
    assert a["visible"] == a["gpu_ids"][0] and b["visible"] == b["gpu_ids"][0]
    assert not ray.wait([waiting], timeout=3)[0]  # both GPUs are taken: the third one waits
    ray.kill(trio[calls.index(ready[0])])
    c = ray.get(waiting, timeout=600)
    assert c["gpu_ids"] == a["gpu_ids"]  # it got the GPU the killed one gave back
    for actor in trio:
        ray.kill(actor)


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_a_study_on_a_gpu_cluster_loads_each_trials_model_on_cuda(fake_gpu_ray, tmp_path):
    """The trial reaches its actor, which loads the model on `cuda`: with fake GPUs on a CPU
    machine, that is the one-line error of a machine without CUDA, from the actor."""
    from knowcomp.errors import KnowcompError
    from knowcomp.study.runner import run_study
    from knowcomp.study.spec import spec_from_dict

    folder = tmp_path / "model"
    save_tiny_llama(folder, build("gpt2"), max_position_embeddings=512)
    spec = spec_from_dict({"name": "g", "models": [str(folder)], "probes": ["piqa"],
                           "limit": 1, "output": str(tmp_path / "g.sqlite"),
                           "recipes": ["prune:l1_unstructured:overall:0.5"]})  # fmt: skip
    with pytest.raises(KnowcompError, match=r"^device 'cuda': this torch build or machine has "
                       "no CUDA GPU"):  # fmt: skip
        run_study(spec, executor="ray")


# -- device maps -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_7b_config():
    return AutoConfig.for_model("llama", **LLAMA_7B)


def test_a_7b_model_is_spread_over_two_gpus_then_the_cpu(llama_7b_config):
    memory = {0: 6 * GIB, 1: 6 * GIB, "cpu": 64 * GIB}
    plan = plan_device_map(llama_7b_config, AutoModelForCausalLM, torch.bfloat16, "sequential",
                           memory)  # fmt: skip
    layers = [plan[f"model.layers.{i}"] for i in range(32)]
    assert plan["model.embed_tokens"] == 0 and layers[0] == 0
    assert layers == sorted(layers, key=lambda d: {0: 0, 1: 1, "cpu": 2}[d])  # in order
    on = {d: layers.count(d) for d in (0, 1, "cpu")}
    # a layer is ~386 MiB in bfloat16: ~14 fit in 6 GiB beside the embeddings
    assert 12 <= on[0] <= 15 and 12 <= on[1] <= 15 and on["cpu"] == 32 - on[0] - on[1]
    assert plan["lm_head"] == "cpu" and "disk" not in plan.values()
    assert not any(name.startswith("model.layers.0.") for name in plan)  # a layer is not split
    text = describe_device_map(plan)
    assert text.startswith("cuda:0 model.embed_tokens..model.layers.") and "; cpu " in text


def test_balanced_maps_share_the_layers_between_the_gpus(llama_7b_config):
    memory = {0: 40 * GIB, 1: 40 * GIB, "cpu": 64 * GIB}
    plan = plan_device_map(llama_7b_config, AutoModelForCausalLM, torch.bfloat16, "auto", memory)
    layers = [plan[f"model.layers.{i}"] for i in range(32)]
    assert "cpu" not in layers and abs(layers.count(0) - layers.count(1)) <= 4
    low = plan_device_map(llama_7b_config, AutoModelForCausalLM, torch.bfloat16,
                          "balanced_low_0", memory)  # fmt: skip
    assert low == {"": 1}  # GPU 0 kept free (for generation): all of it on GPU 1
    assert describe_device_map(low) == "cuda:1 the whole model (1 module)"


def test_a_map_that_would_offload_to_disk_is_one_line(llama_7b_config):
    memory = {0: 2 * GIB, 1: 2 * GIB, "cpu": 4 * GIB}
    with pytest.raises(PlacementError) as err:
        plan_device_map(llama_7b_config, AutoModelForCausalLM, torch.bfloat16, "auto", memory)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("device_map auto: the model (12.6 GiB in bfloat16) does not fit")
    assert "offloaded to disk" in message and "cuda:0" in message


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, build("gpt2"), max_position_embeddings=512)
    return folder


def test_loading_with_a_device_map_records_the_map(model_dir):
    from knowcomp.models import load_model

    loaded = load_model(str(model_dir), device_map="auto")
    assert loaded.device_map is not None and set(loaded.device_map.values()) <= {"cpu", 0}
    assert any(note.startswith("device map (auto): ") for note in loaded.notes)
    assert load_model(str(model_dir)).device_map is None


@pytest.mark.integration
def test_eval_refuses_a_model_that_would_go_to_disk_before_its_weights_load(tmp_path):
    """A folder whose config is a 2-trillion-parameter Llama (and whose weights are a tiny real
    file: loading them would fail): the plan refuses first, in one line, exit 2."""
    folder = tmp_path / "huge"
    save_tiny_llama(folder, build("gpt2"), max_position_embeddings=512)
    config = AutoConfig.from_pretrained(folder)
    config.update(dict(hidden_size=16384, intermediate_size=65536, num_hidden_layers=640,
                       num_attention_heads=128, num_key_value_heads=8))  # fmt: skip
    config.save_pretrained(folder)
    result = CliRunner().invoke(cli, ["eval", str(folder), "--probes", "piqa",
                                      "--device-map", "auto"])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "would be offloaded to disk" in lines[0]
    assert "Traceback" not in result.output


# -- dtypes are never mixed in one comparison ------------------------------------------------
@pytest.mark.integration
def test_a_bfloat16_trial_is_compared_with_the_bfloat16_baseline_only(tmp_path):
    from knowcomp.report import load_frame
    from knowcomp.store import ResultsStore
    from tests.test_report import _outcome, _prune

    def outcome(recipe, dtype, score):
        out = _outcome("m1", recipe, _prune("overall", 0.5) if recipe else [], 0,
                       {"piqa": score})  # fmt: skip
        out.trial |= {"dtype": dtype, "trial_key": f"{out.trial['trial_key']}|{dtype}"}
        return out

    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        store.write(outcome(None, "float32", 0.80))
        store.write(outcome("prune:l1_unstructured:overall:0.5", "bfloat16", 0.60))
    with ResultsStore(path, readonly=True) as store:
        [point] = load_frame(store, with_intervals=False).points
    assert point.baseline is None  # no bfloat16 baseline: no drop against float32's
    with ResultsStore(path) as store:
        store.write(outcome(None, "bfloat16", 0.70))
    with ResultsStore(path, readonly=True) as store:
        frame = load_frame(store, with_intervals=False)
    [point] = frame.points
    assert point.baseline == pytest.approx(0.70) and "bfloat16" in point.model
    assert sorted(b.value for b in frame.baselines) == pytest.approx([0.70, 0.80])
