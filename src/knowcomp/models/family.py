"""Model families, detected from the config (never from the model's name)."""

from __future__ import annotations

from enum import StrEnum

from transformers import PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)

from knowcomp.errors import KnowcompError


class Family(StrEnum):
    ENCODER = "encoder"
    ENCODER_DECODER = "encoder-decoder"
    DECODER = "decoder"


_ARCH_SUFFIXES: tuple[tuple[str, Family], ...] = (
    ("ForConditionalGeneration", Family.ENCODER_DECODER),
    ("ForCausalLM", Family.DECODER),
    ("LMHeadModel", Family.DECODER),
    ("ForMaskedLM", Family.ENCODER),
    ("ForPreTraining", Family.ENCODER),
)


def detect_family(config: PretrainedConfig) -> Family:
    """Encoder, encoder-decoder or decoder, from the config's flags, architectures and type.

    Order matters: the encoder-decoder flag is authoritative; then the checkpoint's declared
    architecture; then which auto-class mapping knows the model type (masked LM before causal
    LM, since BERT-like types appear in both).
    """
    if getattr(config, "is_encoder_decoder", False):
        return Family.ENCODER_DECODER
    for arch in getattr(config, "architectures", None) or []:
        for suffix, family in _ARCH_SUFFIXES:
            if arch.endswith(suffix):
                return family
    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return Family.ENCODER_DECODER
    if getattr(config, "is_decoder", False) and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return Family.DECODER
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return Family.ENCODER
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return Family.DECODER
    raise KnowcompError(
        f"cannot tell the family of model type '{model_type}': it has no masked-LM, causal-LM "
        "or seq2seq head in transformers; knowcomp needs a language-model head"
    )
