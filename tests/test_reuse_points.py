"""Where each module group first changes the forward pass, for every tiny architecture: the
README's claim that no group changes only the middle of a decoder ("reuse from a middle layer"
has no case), checked in execution order by hooks on a real forward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family, detect_family
from knowcomp.models.loading import AUTO_CLASSES, LoadedModel
from knowcomp.modules.groups import GROUPS
from knowcomp.reuse import Reuse
from knowcomp.reuse.trial import recipe_change_point
from tests.conftest import TINY_CONFIGS, example_input

DECODER_ONLY = {"decoder_attention", "cross_attention"}  # of an encoder-decoder


def _build(model_type: str, **overrides) -> LoadedModel:
    config = AutoConfig.for_model(model_type, **(TINY_CONFIGS[model_type] | overrides))
    family = detect_family(config)
    torch.manual_seed(0)
    model = AUTO_CLASSES[family].from_config(config).eval()
    return LoadedModel(model, None, family, model_type, "config")


def _first_blocks(model: torch.nn.Module) -> list[str]:
    """The second block of every stack of repeated blocks (`model.layers.1`, `encoder.block.1`;
    not the numbered sublayers inside a block, like T5's `block.0.layer.1`)."""
    modules = dict(model.named_modules())
    return [
        name for name in modules
        if name.endswith(".1") and isinstance(modules[name[:-2]], torch.nn.ModuleList)
        and not any(part.isdigit() for part in name[:-2].split("."))
    ]  # fmt: skip


def _executed_first(loaded: LoadedModel, names: set[str], marks: list[str]) -> list[str]:
    """The names of `names` and `marks`, in the order a forward first enters them."""
    order: list[str] = []
    modules = dict(loaded.model.named_modules())
    handles = [modules[n].register_forward_pre_hook(lambda *_a, n=n: order.append(n))
               for n in {*names, *marks}]  # fmt: skip
    try:
        with torch.no_grad():
            loaded.model(**example_input(loaded))
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


CASES = [(t, {}) for t, c in TINY_CONFIGS.items()] + [("opt", {"word_embed_proj_dim": 16})]


@pytest.mark.parametrize(("model_type", "overrides"), CASES, ids=[f"{t}{o}" for t, o in CASES])
def test_every_group_but_the_final_layer_changes_the_first_block_or_before(model_type, overrides):
    """A decoder's groups change block 0 or what runs before it (OPT-350m's `project_in`), so
    what they leave unchanged is at most the embeddings and part of block 0; the final layer
    changes only the head (head reuse); an encoder-decoder's decoder-only groups leave the
    encoder (encoder reuse) and change its decoder's first block. Encoders' `other` group (in
    BERT, RoBERTa and DistilBERT only the masked-LM head's transform, after the last block) is
    the one group that changes only what follows the blocks without being the final layer: it
    is not reused (README, "Prefix reuse")."""
    loaded = _build(model_type, **overrides)
    session = CompressionSession(loaded)
    seconds = _first_blocks(loaded.model)  # none in ALBERT: one shared block, run each time
    assert seconds or model_type == "albert"
    for group in GROUPS:
        recipe = f"prune:l1_unstructured:{group}:0.5"
        try:
            planned = session.plan(parse_recipe(recipe))
        except KnowcompError:
            continue  # a group with no layers in this architecture
        changed = {layer.name for step in planned for layer in step.layers}
        point = recipe_change_point(loaded, session, recipe, 0)
        if group == "final_layer":
            assert point.reuse is Reuse.HEAD
            continue
        if loaded.family is Family.ENCODER and group == "other":
            assert point.reuse is Reuse.NONE
            continue
        order = _executed_first(loaded, changed, seconds)
        stacks = seconds
        if loaded.family is Family.ENCODER_DECODER:
            decoder_only = group in DECODER_ONLY
            assert point.reuse is (Reuse.ENCODER if decoder_only else Reuse.NONE), group
            encoder = {id(m) for m in loaded.model.get_encoder().modules()}
            modules = dict(loaded.model.named_modules())
            in_encoder = [s for s in seconds if id(modules[s]) in encoder]
            stacks = [s for s in seconds if s not in in_encoder] if decoder_only else in_encoder
        else:
            assert point.reuse is Reuse.NONE, group
        first_change = next(n for n in order if n in changed)
        second_block = min((order.index(s) for s in stacks if s in order), default=len(order))
        assert order.index(first_change) < second_block, (group, first_change)
