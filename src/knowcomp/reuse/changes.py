"""Where a trial's recipe first changes the forward pass, and so what of a baseline run it can
reuse.

A recipe changes a set of linear layers. Everything the forward pass computes before the first
of them is the uncompressed model's, so a trial can start from states the baseline run kept:

- `Reuse.HEAD`: only the LM head (the final layer) changed. The head's inputs at the scored
  positions are the baseline's; the trial is the head applied to them.
- `Reuse.ENCODER`: an encoder-decoder whose encoder is untouched (decoder-only compression).
  The encoder's outputs are the baseline's; the decoder and head run for real.
- `Reuse.NONE`: something before the head (of a decoder or encoder) changed, or an adapter is
  attached (LoRA, prompt or prefix tuning change the inputs or the layers): nothing is reused.

The decision is a set test on module names, so it holds whatever the forward order; `first`
names the earliest changed module in `named_modules()` (registration) order, which follows the
forward pass block by block (embeddings, blocks, final norm, head) but not always inside one:
BART registers `k_proj` before `q_proj`, and OPT-350m `project_out` (after the blocks) before
`project_in` (before them). Only the notes' wording reads it.

No module group can change only the middle of a decoder: every group but `final_layer` changes
the first block or what runs before it, and an encoder-decoder's decoder-only groups change its
decoder's first block (`tests/test_reuse_points.py` checks it in execution order). So these
three cases are all there is to reuse; a point inside the network would need a recipe that
names blocks, which knowcomp has not got.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from torch import nn

from knowcomp.models.family import Family


class Reuse(Enum):
    HEAD = "head"
    ENCODER = "encoder"
    NONE = "none"


@dataclass(frozen=True)
class ChangePoint:
    """The earliest module a recipe changes (None: no change) and what can be reused."""

    first: str | None
    reuse: Reuse

    def describe(self) -> str:
        if self.reuse is Reuse.HEAD:
            return f"only the final layer ({self.first}) changes: the baseline's head inputs"
        if self.reuse is Reuse.ENCODER:
            return f"the encoder is untouched (first change: {self.first}): its outputs"
        return f"first change at {self.first}: nothing before it is reused"


def _inside(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _name_of(model: nn.Module, module: nn.Module | None) -> str | None:
    if module is None:
        return None
    return next((n for n, m in model.named_modules() if m is module), None)


def change_point(model: nn.Module, family: Family, changed: Iterable[str]) -> ChangePoint:
    """What a trial that changes the modules named `changed` can reuse of a baseline run."""
    changed = set(changed)
    order = [name for name, _ in model.named_modules() if name in changed]
    first = order[0] if order else None
    if not changed:
        return ChangePoint(None, Reuse.NONE)  # the baseline itself: nothing to reuse from
    head = _name_of(model, model.get_output_embeddings())
    if head is not None and changed == {head}:
        return ChangePoint(first, Reuse.HEAD)
    if family is Family.ENCODER_DECODER:
        encoder = _name_of(model, model.get_encoder())
        if encoder is not None and not any(_inside(n, encoder) for n in changed):
            return ChangePoint(first, Reuse.ENCODER)
    return ChangePoint(first, Reuse.NONE)
