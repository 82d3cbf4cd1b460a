"""Can this model be opened? Checked before a study's first trial, without reading the weights.

A study of two models whose second is broken used to run the first model's trials and then
die with a traceback. `check_source` reads what is cheap and catches what breaks a load: the
GGUF header and tensor table (gguf's own reader), the config (transformers' own parser), the
tokenizer (loaded: a few hundred milliseconds), and every weight file present and the size its
header says (safetensors' own header check). Torch `.bin` checkpoints are only checked to be
zip archives: unpickling them would read the weights.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from knowcomp.errors import ModelNotFoundError
from knowcomp.models.sources import Source

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"


class BrokenModelError(ModelNotFoundError):
    """A model that exists but cannot be opened: broken config, weights or tokenizer."""


def broken(spec: str, problem: str, fix: str = "") -> BrokenModelError:
    fix = fix or "restore the model's files (copy or download it again)"
    return BrokenModelError(f"model '{spec}': {problem}; {fix}")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def check_gguf(spec: str, path: Path) -> None:
    """The file is a GGUF whose header, metadata and tensor table read and fit in the file."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise broken(spec, f"cannot read {path.name} ({err.strerror})") from None
    if size == 0:
        raise broken(spec, f"{path.name} is empty", "pass a complete .gguf file")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise broken(spec, f"{path.name} is not a GGUF file (no GGUF magic bytes)",
                          "pass a .gguf file written by llama.cpp or a model folder")  # fmt: skip
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except Exception as err:  # gguf raises ValueError, IndexError, struct.error...
        problem = f"{path.name} is truncated or damaged ({first_line(err)})"
        fix = "pass a complete .gguf file (compare its size with the original)"
        raise broken(spec, problem, fix) from None


def check_config(spec: str, folder: Path) -> Any:
    """transformers' own config parser, with its failures as one line."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise broken(spec, f"config.json cannot be read ({first_line(err)})",
                     "restore config.json from the original model") from None  # fmt: skip


def check_weights(spec: str, folder: Path) -> None:
    """The folder has weights, and every weight file is whole."""
    for index_name in (SAFETENSORS_INDEX, TORCH_BIN_INDEX):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_bytes())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise broken(spec, f"{index_name} is not a valid weight index") from None
            for shard in shards:
                _check_weight_file(spec, folder / shard)
            return
    for name in (SAFETENSORS, TORCH_BIN):
        if (folder / name).exists():
            _check_weight_file(spec, folder / name)
            return
    raise broken(spec, f"no weights in {folder} ({SAFETENSORS} or {TORCH_BIN})",
                 "copy the weight files beside config.json")  # fmt: skip


def _check_weight_file(spec: str, path: Path) -> None:
    if not path.is_file():
        raise broken(spec, f"weight file {path.name} is missing")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # SafetensorError is not importable as a type
            raise broken(spec, f"weight file {path.name} is truncated or damaged "
                         f"({first_line(err)})") from None  # fmt: skip
    elif not zipfile.is_zipfile(path):
        raise broken(spec, f"weight file {path.name} is truncated or not a torch checkpoint")


def check_tokenizer(spec: str, folder: Path) -> None:
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # tokenizer loaders raise many types
        raise broken(spec, f"no usable tokenizer in {folder} ({first_line(err)})",
                     "copy the tokenizer files (tokenizer.json, tokenizer_config.json) from the "
                     "original model") from None  # fmt: skip


def check_folder(spec: str, folder: Path, *, tokenizer: bool = True) -> Any:
    """A transformers model folder that opens: its config (returned), weights and tokenizer."""
    config = check_config(spec, folder)
    check_weights(spec, folder)
    if tokenizer:
        check_tokenizer(spec, folder)
    return config


def check_compressed(spec: str, folder: Path) -> None:
    """A folder written by `knowcomp compress`: its record, config and weights."""
    from knowcomp.compress.saving import META_FILE, STATE_FILE

    try:
        meta = json.loads((folder / META_FILE).read_bytes())
        layout = meta["layout"]
    except (OSError, ValueError, KeyError, TypeError):
        raise broken(spec, f"{META_FILE} is not a valid knowcomp record",
                     "compress the source model again") from None  # fmt: skip
    check_config(spec, folder)
    if layout == "transformers":
        check_weights(spec, folder)
    elif not zipfile.is_zipfile(folder / STATE_FILE):
        raise broken(
            spec, f"{STATE_FILE} is missing or truncated", "compress the source model again"
        )


def check_source(spec: str, source: Source, gguf_cache: Path | None = None) -> Any:
    """Open-ability of a resolved local source; returns its config where one was read."""
    if source.kind == "compressed":
        check_compressed(spec, Path(source.location))
        return None
    if source.kind == "gguf":
        if gguf_cache is not None and (gguf_cache / "config.json").is_file():
            return check_folder(spec, gguf_cache, tokenizer=False)
        assert source.gguf_file is not None
        check_gguf(spec, Path(source.location) / source.gguf_file)
        return None
    return check_folder(spec, Path(source.location))
