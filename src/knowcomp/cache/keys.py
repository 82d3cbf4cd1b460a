"""The key of a cached baseline: everything that decides an uncompressed model's probe result.

Model weights, config and tokenizer (hashed, see `fingerprints`), the probe and the bytes of
the data it reads, every run option that changes what is scored (limit, seed, LAMA mode and
protocol, BOS setting, generation cap, batch budget), the dtype and device kind the model
runs in, and the versions that decide the scores: knowcomp's `SCORING_VERSION` and
`INPUT_RULE`, torch's and transformers'. The data directory's path is not in the key, only
its bytes: a copy of the mirror elsewhere shares the cache.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from knowcomp.cache.fingerprints import config_hash, files_checksum, tokenizer_hash, weights_hash
from knowcomp.data.catalog import LAMA_CLOZE, TEMPLATES, datasets, get_dataset
from knowcomp.errors import KnowcompError
from knowcomp.models.loading import LoadedModel
from knowcomp.paths import data_dir as default_data_dir
from knowcomp.probes.base import Probe, RunOptions
from knowcomp.probes.inputs import INPUT_RULE

# Bump whenever a probe's scores for the same model, data and options change (a metric's
# definition, an item's selection, a tie rule): every cached baseline then misses.
SCORING_VERSION = 2  # 2: a rank's ties ordered as argmax breaks them (was: optimistic)

# every RunOptions field that decides which items are scored and how (`part`: the share of
# the items an adaptive evaluation scored, `pipeline.adaptive`)
_OPTIONS = ("limit", "seed", "skip_malformed", "max_tokens", "lama_mode", "lama_protocol",
            "max_new_tokens", "add_bos", "part")  # fmt: skip


def versions() -> dict[str, Any]:
    """The versions a cached baseline must match to be reused."""
    found: dict[str, Any] = {"scoring": SCORING_VERSION, "input_rule": INPUT_RULE}
    for package in ("torch", "transformers"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def probe_data_files(probe: Probe, options: RunOptions) -> tuple[list[Path], Path | None]:
    """The files `probe` may read, and the data directory they lie in (None for a user task's
    own files). A LAMA probe reads templates and, under the cost-of-compression protocol,
    other LAMA datasets' files: every LAMA file counts, so an edit of any invalidates its
    cached baselines (the LAMA files hash in about a tenth of a second, once per process)."""
    if Path(probe.dataset).suffix:  # a user task: its data file and its YAML
        own = [Path(probe.dataset)]
        spec = getattr(probe, "path", None) or getattr(probe, "spec", None)
        if isinstance(spec, Path):
            own.append(spec)
        return own, None
    root = Path(options.data_dir) if options.data_dir is not None else default_data_dir()
    dataset = get_dataset(probe.dataset)
    if dataset.category == LAMA_CLOZE:
        names = [d for d in datasets() if d.category in (LAMA_CLOZE, TEMPLATES)]
    else:
        names = [dataset]
    return [root / rel for d in names for rel in d.files if (root / rel).is_file()], root


def _device_kind(loaded: LoadedModel) -> str:
    import torch

    kinds = sorted({p.device.type for p in loaded.model.parameters()})
    kind = "+".join(kinds)
    if "cuda" in kinds:
        kind += f" ({torch.cuda.get_device_name()})"
    return kind


def baseline_key(loaded: LoadedModel, probe: Probe, options: RunOptions) -> dict[str, Any] | None:
    """The cache key of `probe` run on `loaded` with `options`, or None when the model's
    weights cannot be hashed (a quantized model) or the probe's data cannot be found: such
    runs are not cached (and a missing dataset fails in the probe itself, with its message)."""
    weights = weights_hash(loaded.model)
    if weights is None:
        return None
    try:
        files, root = probe_data_files(probe, options)
    except KnowcompError:
        return None
    if not files:
        return None
    dtype = next(loaded.model.parameters()).dtype
    return {
        "weights": weights,
        "config": config_hash(loaded.model),
        "tokenizer": tokenizer_hash(loaded.tokenizer),
        "family": loaded.family.value,
        "probe": probe.name,
        "data": files_checksum(files, root),
        "options": {name: getattr(options, name) for name in _OPTIONS},
        "dtype": str(dtype).removeprefix("torch."),
        "device": _device_kind(loaded),
        "versions": versions(),
    }


def key_digest(key: dict[str, Any]) -> str:
    """The entry's file name stem: SHA-256 of the key's canonical JSON."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
