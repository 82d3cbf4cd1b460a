"""`--device`, `--dtype` and `--device-map` on the commands that load a model: used, recorded,
and checked (with every recipe step's needs) before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from knowcomp.cli.main import cli
from tests.conftest import save_tiny_llama
from tests.test_lama import SHARED_DATA
from tests.tokenizer_matrix import build


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_llama(folder, build("gpt2"), max_position_embeddings=512)
    return folder


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")
def test_eval_runs_and_records_the_dtype_it_was_asked_for(tmp_path, model_dir):
    runner = CliRunner()
    out = {}
    for dtype in ("auto", "bfloat16"):
        path = tmp_path / f"{dtype}.json"
        args = ["eval", str(model_dir), "--probes", "piqa", "--limit", "3", "--device", "cpu",
                "--dtype", dtype, "--out", str(path)]  # fmt: skip
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        out[dtype] = json.loads(path.read_text())
    assert (out["auto"]["dtype"], out["auto"]["device"]) == ("float32", "cpu")  # auto on CPU
    assert out["bfloat16"]["dtype"] == "bfloat16"
    lls = {d: o["results"][0]["records"][0]["loglikelihoods"] for d, o in out.items()}
    assert lls["auto"] != lls["bfloat16"]  # the model really ran in bfloat16


def test_compress_in_bfloat16(model_dir):
    result = CliRunner().invoke(
        cli, ["compress", str(model_dir), "-r", "prune:l1_unstructured:overall:0.5", "--json",
              "--dtype", "bfloat16"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "int8"], "'int8' is not one of 'auto', 'float32', 'bfloat16', 'float16'"),
        (["--device", "foo"], "unknown device 'foo'; choose cpu, cuda, cuda:N or mps"),
        (["--recipe", "quant:dynamic_int8:overall", "--dtype", "bfloat16"],
         "dynamic_int8 on CPU (torch.ao) needs a float32 model"),
    ],
)  # fmt: skip
def test_bad_placements_are_one_line_before_the_model_loads(tmp_path, args, message):
    missing = tmp_path / "no-such-model"  # loading it would fail: the check must come first
    result = CliRunner().invoke(cli, ["eval", str(missing), "--probes", "piqa", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    result = CliRunner().invoke(
        cli, ["compress", str(tmp_path / "m"), "-r", "prune:l1_unstructured:overall:0.5",
              "--device", "cuda"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "has no CUDA GPU; use device: cpu" in result.output
