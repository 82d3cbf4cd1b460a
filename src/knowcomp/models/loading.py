"""`load_model(spec)`: model + tokenizer + family from any spec, with one-line errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

from knowcomp.errors import ModelNotFoundError
from knowcomp.models.family import Family, detect_family
from knowcomp.models.placement import DTYPES, check_placement
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


@dataclass
class LoadedModel:
    """A model ready for compression and probing."""

    model: PreTrainedModel
    tokenizer: Any
    family: Family
    spec: str
    source: str
    notes: list[str] = field(default_factory=list)
    device_map: dict[str, int | str] | None = None  # where each module went (device_map runs)

    @property
    def name(self) -> str:
        return type(self.model).__name__


def load_model(
    spec: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    device_map: str | None = None,
    require_tokenizer: bool = True,
) -> LoadedModel:
    """Load `spec`: a short name, a .gguf file, a local folder, a `knowcomp compress` output
    folder, or a Hugging Face id (from the local cache first, the hub only if reachable).

    `device_map` (e.g. "auto") places the model's layers across the devices accelerate sees,
    for a model larger than one device; `device` is then ignored. The map is planned before
    the weights load (`device_map.plan_device_map`: a map that would offload to disk is a
    one-line error) and kept in `LoadedModel.device_map`. A local model is checked
    (`preflight`) before its weights load, so a broken file is one line, not a traceback.
    Without `require_tokenizer`, a folder with no usable tokenizer loads with `tokenizer=None`
    and a note saying why.
    """
    from knowcomp.models.preflight import check_source

    check_placement(device, dtype, device_map)
    source = resolve(spec)
    hf_logging.set_verbosity_error()  # load reports go to LoadedModel.notes instead
    hf_logging.disable_progress_bar()
    if source.kind == "compressed":
        from knowcomp.compress.saving import load_compressed  # compressed output folders

        check_source(spec, source)
        return load_compressed(Path(source.location), spec=spec, device=device)
    if source.kind == "gguf":
        check_source(spec, source, gguf_cache_folder(source))
        source = _dequantized_gguf(source)
    if source.kind == "folder":
        from knowcomp.models.preflight import check_config, check_weights

        check_config(spec, Path(source.location))
        check_weights(spec, Path(source.location))
    config, kwargs = _load_config(spec, source)
    family = detect_family(config)
    planned = _planned_map(config, family, dtype, device_map) if device_map else None
    placement = {"device_map": planned} if planned else {}
    model, info = AUTO_CLASSES[family].from_pretrained(
        source.location, config=config, dtype=DTYPES[dtype], output_loading_info=True,
        **placement, **kwargs,
    )  # fmt: skip
    model.eval()
    if not device_map:
        model.to(device)
    tokenizer, problem = _tokenizer(spec, source, kwargs, required=require_tokenizer)
    notes = _loading_notes(info, tokenizer) if tokenizer is not None else [problem]
    if planned:
        from knowcomp.models.device_map import describe_device_map

        notes.append(f"device map ({device_map}): {describe_device_map(planned)}")
    return LoadedModel(model, tokenizer, family, spec, source.location, notes, planned)


def _planned_map(
    config: PretrainedConfig, family: Family, dtype: str, strategy: str
) -> dict[str, int | str]:
    from knowcomp.models.device_map import plan_device_map

    return plan_device_map(config, AUTO_CLASSES[family], DTYPES[dtype], strategy)


def load_tokenizer(spec: str) -> Any:
    """`spec`'s tokenizer alone, without reading its weights (for work that only tokenizes);
    a GGUF file is decoded into the cache once, as `load_model` does."""
    source = resolve(spec)
    if source.kind == "gguf":
        source = _dequantized_gguf(source)
    _, kwargs = _load_config(spec, source)
    return _tokenizer(spec, source, kwargs, required=True)[0]


def _tokenizer(spec: str, source: Source, kwargs: dict[str, Any], *, required: bool):
    """(tokenizer, None), or (None, why not) when it cannot load and is not `required`."""
    from knowcomp.models.preflight import broken, first_line

    try:
        return AutoTokenizer.from_pretrained(source.location, **kwargs), None
    except Exception as err:  # tokenizer loaders raise many types
        problem = f"no usable tokenizer in {source.location} ({first_line(err)})"
        if required:
            raise broken(spec, problem, "copy the tokenizer files (tokenizer.json, "
                         "tokenizer_config.json) from the original model") from None  # fmt: skip
        return None, f"{problem}: steps that need text (the output drift note) are skipped"


def check_model(spec: str) -> Family | None:
    """Fail now, with one line, if `spec` cannot be found or opened (config, weight files
    whole, tokenizer; see `preflight`), and return its family where the config tells it:
    for validating a study before any work starts. No weights are read."""
    from knowcomp.models.preflight import check_source

    source = resolve(spec)
    if source.kind == "hub":
        return detect_family(_load_config(spec, source)[0])
    cache = gguf_cache_folder(source) if source.kind == "gguf" else None
    config = check_source(spec, source, cache)
    if source.kind == "compressed":
        from knowcomp.models.preflight import check_config

        config = check_config(spec, Path(source.location))
    return detect_family(config) if config is not None else None


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
