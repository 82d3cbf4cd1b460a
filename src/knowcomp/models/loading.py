"""`load_model(spec)`: model + tokenizer + family from any spec, with one-line errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from knowcomp.errors import KnowcompError, ModelNotFoundError
from knowcomp.models.family import Family, detect_family
from knowcomp.models.sources import (
    SHORT_NAMES,
    Source,
    gguf_cache_folder,
    hub_reachable,
    resolve,
    write_cache_atomically,
)

log = logging.getLogger(__name__)

AUTO_CLASSES = {
    Family.ENCODER: AutoModelForMaskedLM,
    Family.ENCODER_DECODER: AutoModelForSeq2SeqLM,
    Family.DECODER: AutoModelForCausalLM,
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for compression and probing."""

    model: PreTrainedModel
    tokenizer: Any
    family: Family
    spec: str
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return type(self.model).__name__


def load_model(
    spec: str, *, dtype: str = "float32", device: str = "cpu", device_map: str | None = None
) -> LoadedModel:
    """Load `spec`: a short name, a .gguf file, a local folder, a `knowcomp compress` output
    folder, or a Hugging Face id (from the local cache first, the hub only if reachable).

    `device_map` (e.g. "auto") places the model's layers across the devices accelerate sees,
    for a model larger than one device; `device` is then ignored.
    """
    if dtype not in DTYPES:
        raise KnowcompError(f"unknown dtype '{dtype}'; choose one of: {', '.join(DTYPES)}")
    source = resolve(spec)
    hf_logging.set_verbosity_error()  # load reports go to LoadedModel.notes instead
    hf_logging.disable_progress_bar()
    if source.kind == "compressed":
        from knowcomp.compress.saving import load_compressed  # compressed output folders

        return load_compressed(Path(source.location), spec=spec, device=device)
    if source.kind == "gguf":
        source = _dequantized_gguf(source)
    config, kwargs = _load_config(spec, source)
    family = detect_family(config)
    placement = {"device_map": device_map} if device_map else {}
    model, info = AUTO_CLASSES[family].from_pretrained(
        source.location, config=config, dtype=DTYPES[dtype], output_loading_info=True,
        **placement, **kwargs,
    )  # fmt: skip
    model.eval()
    if not device_map:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    notes = _loading_notes(info, tokenizer)
    return LoadedModel(model, tokenizer, family, spec, source.location, notes)


def check_model(spec: str) -> Family | None:
    """Fail now, with `load_model`'s one-line error, if `spec` cannot be found, and return its
    family where the config tells it: a cheap check (no weights read) for validating a study
    before any work starts. None where the family cannot be read cheaply."""
    source = resolve(spec)
    try:
        if source.kind == "hub":
            return detect_family(_load_config(spec, source)[0])
        if source.kind == "gguf":
            cached = gguf_cache_folder(source)
            if not (cached / "config.json").is_file():
                return None  # reading the GGUF's config means parsing the file: leave it
            return detect_family(AutoConfig.from_pretrained(cached))
        return detect_family(AutoConfig.from_pretrained(source.location))
    except KnowcompError:
        if source.kind == "hub":
            raise
        return None
    except (OSError, ValueError):
        return None  # the loader gives the real error when the model loads


def _load_config(spec: str, source: Source) -> tuple[PretrainedConfig, dict[str, Any]]:
    """The config, trying the local hub cache before the network for hub ids."""
    if source.kind != "hub":
        return AutoConfig.from_pretrained(source.location), {}
    try:
        return AutoConfig.from_pretrained(source.location, local_files_only=True), {
            "local_files_only": True
        }
    except OSError:
        pass
    if not hub_reachable():
        raise ModelNotFoundError(
            f"model '{spec}' is not a local path, not a short name "
            f"({', '.join(SHORT_NAMES)}), not in the Hugging Face cache, and the hub is not "
            "reachable; pass a local folder or .gguf file, or download it once with network"
        )
    try:
        return AutoConfig.from_pretrained(source.location), {}
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFoundError(
            f"model '{spec}' could not be loaded from the Hugging Face hub ({first}); "
            "check the id, or pass a local folder or .gguf file"
        ) from None


def _dequantized_gguf(source: Source) -> Source:
    """A folder with a float safetensors copy of the GGUF model, written on first use."""
    folder = gguf_cache_folder(source)
    if (folder / "config.json").is_file():
        return Source(str(folder), "folder")
    log.warning("decoding %s once into %s (about 30 s)", source.gguf_file, folder)
    config = AutoConfig.from_pretrained(source.location, gguf_file=source.gguf_file)
    family = detect_family(config)
    model = AUTO_CLASSES[family].from_pretrained(source.location, gguf_file=source.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    # The weights are plain float tensors now; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_cache_atomically(folder, write)
    return Source(str(folder), "folder")


def _loading_notes(info: dict[str, Any], tokenizer: Any) -> list[str]:
    notes = []
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        notes.append(
            f"{len(missing)} weights were not in the checkpoint and are randomly initialised "
            f"(e.g. {sorted(missing)[0]}): the checkpoint lacks this head, so its predictions "
            "are meaningless; use it for compression tests, not for accuracy"
        )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        notes.append("tokenizer has no pad token; using its end-of-sequence token for padding")
    return notes
