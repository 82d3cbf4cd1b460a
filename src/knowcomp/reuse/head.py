"""Whether kept head inputs can stand for the model's logits.

Some models transform the LM head's output before returning it (Gemma 2's final logit
soft-capping, Cohere's logit scale, Granite's logits scaling). For them the head applied to
kept states is not what the model returns, so a head-only trial cannot reuse those states.
`head_is_final` checks this on a forward the baseline records, against the model itself,
rather than trusting a list of config names.
"""

from __future__ import annotations

import torch
from torch import nn


def head_is_final(head: nn.Module, head_input: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether `logits` (the model's output for that forward) equal `head` applied to
    `head_input` (what the head saw): nothing comes after the head."""
    with torch.inference_mode():
        again = head(head_input)
    if again.numel() != logits.numel():
        return False
    again = again.reshape(logits.shape)
    return bool(torch.allclose(again.float(), logits.float(), rtol=1e-5, atol=1e-6))
