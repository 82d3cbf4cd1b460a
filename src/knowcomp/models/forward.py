"""How to call a model of each family, and the guards for what only some families can do.

Every place that runs a forward pass (the probes' engine, layer-wise calibration, output drift,
layer-wise similarity) builds its arguments here, so that a family's conventions live in one
place: an encoder takes token ids and a mask; a decoder the same, without a key/value cache
(nothing is generated on top of a scoring forward); an encoder-decoder also takes decoder ids,
by default the encoder's own ids (the decoder "reads the same text").
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Protocol

import torch
from torch import nn

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family


@functools.cache
def _cache_name(forward_owner: type) -> str:
    parameters = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_kwarg(model: nn.Module) -> str:
    """The keyword `model`'s forward takes its key/value cache by.

    transformers renamed `past_key_values` to `cache` (the old name is accepted with a warning
    until 5.40); older releases, and remote code written for them, know only the old name. A
    PEFT wrapper passes keywords through, so its base model decides.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_name(type(base))


def with_cache(model: nn.Module, cache: Any) -> dict[str, Any]:
    """`{name: cache}` for `model(**...)`, under the name its forward takes."""
    return {cache_kwarg(model): cache}


def output_cache(output: Any) -> Any:
    """The key/value cache a forward returned (`cache`, or `past_key_values` before the rename)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


class _HasFamily(Protocol):
    spec: str
    family: Family


def forward_kwargs(
    family: Family,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    decoder_input_ids: torch.Tensor | None = None,
    decoder_attention_mask: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The keyword arguments of one scoring forward of a `family` model.

    Decoder arguments are added for encoder-decoders only; without `decoder_input_ids` the
    decoder reads `input_ids` (and then `attention_mask` as its mask).
    """
    kwargs: dict[str, Any] = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if family is not Family.ENCODER:
        kwargs["use_cache"] = False
    if family is Family.ENCODER_DECODER:
        if decoder_input_ids is None:
            decoder_input_ids, decoder_attention_mask = input_ids, attention_mask
        kwargs["decoder_input_ids"] = decoder_input_ids
        if decoder_attention_mask is not None:
            kwargs["decoder_attention_mask"] = decoder_attention_mask
    return kwargs


def decoder_problem(
    family: Family, what: str, does: str = "score continuations with"
) -> str | None:
    """Why `what` cannot run on a `family` model because it needs a decoder (causal LM), or
    None when it can. `does` says what it does with the decoder, for the message."""
    if family is Family.DECODER:
        return None
    return f"{what} {does} a decoder (causal LM)"


def continuation_problem(family: Family, what: str) -> str | None:
    """Why `what`, which scores or generates continuations with a decoder (a causal LM, or the
    decoder of an encoder-decoder after its encoder read the context), cannot run on a
    `family` model, or None: only encoders, which fill masks and have no decoder, cannot."""
    if family is not Family.ENCODER:
        return None
    return f"{what} score continuations with a decoder (a causal LM or an encoder-decoder)"


def require_decoder(
    loaded: _HasFamily,
    what: str,
    does: str = "score continuations with",
    error: type[KnowcompError] = KnowcompError,
) -> None:
    """Raise a one-line `error` unless `loaded` is a decoder (see `decoder_problem`)."""
    problem = decoder_problem(loaded.family, what, does)
    if problem is not None:
        raise error(f"{problem}; {loaded.spec} is an {loaded.family.value}")


def require_continuations(loaded: _HasFamily, what: str) -> None:
    """Raise a one-line error unless `loaded` can run `what` (see `continuation_problem`)."""
    problem = continuation_problem(loaded.family, what)
    if problem is not None:
        raise KnowcompError(f"{problem}; {loaded.spec} is an {loaded.family.value}")
