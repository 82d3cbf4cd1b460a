"""Fingerprints of what decides a probe's result: the weights, tokenizer and config a model has
in memory, and the bytes of the data a probe reads.

The weights are hashed from the loaded tensors, not from files or the model's name. A result
depends on what is in memory: the same GGUF file dequantizes differently across transformers
versions, a float16 load of a float32 folder is another model, and a name says nothing about
which snapshot it points to. Hashing the tensors costs about half a second for a 135M model on
a 2-core CPU (SHA-256, which has hardware support here; BLAKE2 took 1.2 s), and is memoized
per model on each tensor's storage and in-place version counter, so it is paid again only
after the weights change (a compression, a restore).

Data files are hashed from their bytes, memoized on path, size and modification time: the
manifest's checksums say what the mirror shipped, not what a user has since edited.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref
from pathlib import Path
from typing import Any

import torch

from knowcomp.data.manifest import sha256_file

_weights_memo: weakref.WeakKeyDictionary[Any, tuple[tuple, str]] = weakref.WeakKeyDictionary()
_file_memo: dict[tuple[str, int, int], str] = {}


def _state_signature(state: dict[str, Any]) -> tuple | None:
    """What identifies the tensors now in `state` without reading them, or None when some
    entry cannot be hashed as plain bytes (quantized or meta tensors, packed parameters)."""
    signature = []
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or value.is_quantized or value.is_meta:
            return None
        signature.append((name, value.data_ptr(), value._version, value.dtype, value.shape))
    return tuple(signature)


def _tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(data.numpy().data).hexdigest()


def weights_hash(model: torch.nn.Module) -> str | None:
    """SHA-256 over every state-dict entry's name, dtype, shape and bytes (tied tensors hash
    the same as untied copies of equal values), or None for a model whose state holds
    tensors that are not plain (a quantized model: its results are not cached)."""
    state = model.state_dict()
    signature = _state_signature(state)
    if signature is None:
        return None
    memo = _weights_memo.get(model)
    if memo is not None and memo[0] == signature:
        return memo[1]
    by_storage: dict[tuple[int, torch.dtype, torch.Size], str] = {}
    total = hashlib.sha256()
    for name, tensor in state.items():
        where = (tensor.data_ptr(), tensor.dtype, tensor.shape)
        if where not in by_storage:
            by_storage[where] = _tensor_digest(tensor)
        total.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|{by_storage[where]}\n".encode())
    digest = total.hexdigest()
    _weights_memo[model] = (signature, digest)
    return digest


_VOLATILE_CONFIG = {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}


def config_hash(model: torch.nn.Module) -> str:
    """SHA-256 of the model's config without where it was loaded from or its version stamp
    (two copies of one model in two folders share their results; the dtype is keyed apart)."""
    config = getattr(model, "config", None)
    values = config.to_dict() if config is not None else {}
    kept = {k: v for k, v in values.items() if k not in _VOLATILE_CONFIG}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_tokenizer_memo: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def tokenizer_hash(tokenizer: Any) -> str:
    """SHA-256 of what decides a tokenizer's ids: its class, full serialized form where it has
    one (fast tokenizers), its vocabulary and special tokens; "none" without a tokenizer.
    Memoized per tokenizer object (a fast tokenizer serializes to megabytes)."""
    if tokenizer is None:
        return "none"
    try:
        return _tokenizer_memo[tokenizer]
    except (KeyError, TypeError):
        pass
    digest = _tokenizer_digest(tokenizer)
    with contextlib.suppress(TypeError):  # an object that takes no weak reference
        _tokenizer_memo[tokenizer] = digest
    return digest


def _tokenizer_digest(tokenizer: Any) -> str:
    parts: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        parts["backend"] = backend.to_str()
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items())
    parts["special"] = getattr(tokenizer, "special_tokens_map", {})
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """A file's SHA-256, memoized on its path, size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_memo:
        _file_memo[key] = sha256_file(path)
    return _file_memo[key]


def files_checksum(paths: list[Path], root: Path | None = None) -> str:
    """SHA-256 over the files' paths (relative to `root` where they lie under it) and bytes."""
    total = hashlib.sha256()
    for path in sorted(paths):
        shown = path.relative_to(root) if root is not None and path.is_relative_to(root) else path
        total.update(f"{shown.as_posix()}|{file_sha256(path)}\n".encode())
    return total.hexdigest()
