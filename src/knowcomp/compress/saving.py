"""Save a compressed model so it loads back, and load it.

Pruned-only models are written with `save_pretrained` and load with plain transformers.
Quantized models hold module types transformers cannot rebuild from a config, so knowcomp
writes the config, the tokenizer and the state dict, and on load rebuilds the model from the
config, replays the recipe's quantization steps to recreate the quantized module types, and
loads the saved integer weights into them. `knowcomp.json` beside the weights records the
source model, the recipe, the seed and the full report.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from knowcomp import __version__
from knowcomp.compress.recipe import parse_recipe
from knowcomp.compress.report import CompressionReport
from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.loading import AUTO_CLASSES, LoadedModel
from knowcomp.modules.groups import classify_linear_layers, resolve_group
from knowcomp.modules.layers import replace_module
from knowcomp.outputs import apply_umask

META_FILE = "knowcomp.json"
STATE_FILE = "quantized_state.pt"
FORMAT_VERSION = 1


def save_compressed(loaded: LoadedModel, report: CompressionReport, out: Path) -> Path:
    """Write the compressed model in `out` (created if needed); returns the metadata path.

    The files written get the modes of the user's umask (safetensors writes 0600)."""
    out.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    recipe = parse_recipe(report.recipe)
    if recipe.has_quantization:
        loaded.model.config.save_pretrained(out)
        torch.save(loaded.model.state_dict(), out / STATE_FILE)
        layout = "knowcomp-quantized"
    else:
        loaded.model.save_pretrained(out)
        layout = "transformers"
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(out)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "knowcomp_version": __version__,
        "layout": layout,
        "source_model": loaded.spec,
        "family": loaded.family.value,
        "report": report.to_dict(),
    }
    path = out / META_FILE
    path.write_text(json.dumps(meta, indent=2))
    for written in out.rglob("*"):  # only what this call wrote: --force may keep other files
        if before.get(written) != written.stat().st_mtime_ns:
            apply_umask(written, recursive=False)
    return path


def load_compressed(folder: Path, *, spec: str, device: str = "cpu") -> LoadedModel:
    """Load a folder written by `save_compressed`."""
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise KnowcompError(
            f"'{folder}' was written by knowcomp {meta.get('knowcomp_version', '?')} in format "
            f"{meta.get('format_version')}; this knowcomp reads format {FORMAT_VERSION}: "
            "compress the source model again"
        )
    family = Family(meta["family"])
    auto = AUTO_CLASSES[family]
    if meta["layout"] == "transformers":
        model = auto.from_pretrained(folder)
    else:
        config = AutoConfig.from_pretrained(folder)
        model = auto.from_config(config)
        _replay_quantization(model, family, meta["report"]["recipe"])
        # Quantized tensors are not plain tensors: only load folders you wrote or trust.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
        model.load_state_dict(state, assign=True)
    model.eval().to(device)
    has_tokenizer = any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(folder) if has_tokenizer else None
    notes = [f"compressed by knowcomp from {meta['source_model']}: {meta['report']['recipe']}"]
    return LoadedModel(model, tokenizer, family, spec, str(folder), notes)


def _replay_quantization(model: torch.nn.Module, family: Family, recipe_text: str) -> None:
    """Swap in quantized modules of the same types and shapes as when the model was saved."""
    recipe = parse_recipe(recipe_text)
    layers = classify_linear_layers(model, family)
    for step in recipe.steps:
        if step.method.kind != "quant":
            continue
        for layer in resolve_group(layers, step.group):
            original = model.get_submodule(layer.name)
            replace_module(model, layer.name, step.method.quantize(original))
