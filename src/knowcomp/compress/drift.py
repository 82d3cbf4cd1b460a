"""How much the model's outputs moved: next-token agreement and KL on a fixed text."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from knowcomp.models.family import Family
from knowcomp.models.forward import forward_kwargs

PROBE_TEXT = (
    "The Eiffel Tower is located in Paris, the capital of France. Water boils at 100 degrees "
    "Celsius at sea level. Albert Einstein developed the theory of relativity."
)


@dataclass(frozen=True)
class OutputDrift:
    top1_agreement: float  # share of positions whose most likely token is unchanged
    mean_kl: float  # mean KL(before || after) of the output distributions, in nats
    positions: int


def probe_logits(model, tokenizer, family: Family, text: str = PROBE_TEXT) -> torch.Tensor:
    """Output logits for `text` at every position (float32, on CPU)."""
    batch = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    kwargs = forward_kwargs(family, batch["input_ids"], batch.get("attention_mask"))
    with torch.inference_mode():
        return model(**kwargs).logits[0].float().cpu()


def output_drift(before: torch.Tensor, after: torch.Tensor) -> OutputDrift:
    agree = (before.argmax(-1) == after.argmax(-1)).float().mean().item()
    kl = F.kl_div(
        F.log_softmax(after, -1), F.log_softmax(before, -1), log_target=True, reduction="none"
    )
    return OutputDrift(agree, kl.sum(-1).mean().item(), before.shape[0])
