"""Turn a cloze item into an engine request for each model family.

- encoder (masked LM): the slot becomes the tokenizer's own mask token; score that position.
- encoder-decoder: the slot becomes the first T5-style sentinel (`<extra_id_0>`); the decoder
  is fed `[start, sentinel]` and the token after the sentinel is scored.
- decoder: the text up to the slot is the context, encoded as `knowcomp.probes.inputs` says
  (a BOS token first where the tokenizer adds one); the next token is scored. A slot that
  opens the sentence is read after the prefix token alone (BOS, else end-of-text).

The object must be one token for the model, read as lm-evaluation-harness splits a pair: the
tokens of `context + " " + object` after the tokens of `context`. Items whose object is several
tokens are counted as `multi_token` and left out of every metric alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.probes import engine
from knowcomp.probes.engine import Request, Scored
from knowcomp.probes.inputs import InputRule, as_rule
from knowcomp.probes.lama.items import SLOT, ClozeItem
from knowcomp.probes.mc.requests import token_ids

SENTINEL = "<extra_id_0>"


def object_tokens(tokenizer_or_rule: Any, context: str, obj: str) -> list[int]:
    """Tokens of `obj` as they follow `context` (lm-evaluation-harness's pair split); an object
    that opens the sentence is tokenized on its own, without a leading space."""
    rule = as_rule(tokenizer_or_rule)
    if not context.strip():
        return rule.plain(obj)
    return rule.split_pair(context.rstrip(), f" {obj}")[1]


@dataclass(frozen=True)
class ClozeBuilder:
    """Builds requests for one model; raises at construction if the family cannot be probed.

    `rule` (decoders) says how text becomes input ids; by default the tokenizer's `auto` rule.
    """

    tokenizer: Any
    family: Family
    model_name: str = "model"
    rule: InputRule | None = None

    def __post_init__(self) -> None:
        if self.family is Family.DECODER and self.rule is None:
            object.__setattr__(self, "rule", as_rule(self.tokenizer))
        if self.family is Family.ENCODER and self.tokenizer.mask_token_id is None:
            raise KnowcompError(
                f"{self.model_name} is an encoder whose tokenizer has no mask token; "
                "LAMA probes need a masked-LM tokenizer"
            )
        if self.family is Family.ENCODER_DECODER and self._sentinel_id() is None:
            raise KnowcompError(
                f"{self.model_name} is an encoder-decoder model without the T5-style sentinel "
                f"{SENTINEL}; LAMA probes support T5-style span filling for this family"
            )

    def _sentinel_id(self) -> int | None:
        """The sentinel's id, None if the vocabulary lacks it (asked per item: `get_vocab()`
        copies the whole vocabulary, a tenth of a second per call)."""
        found = self.tokenizer.convert_tokens_to_ids(SENTINEL)
        return None if found is None or found == self.tokenizer.unk_token_id else found

    def build(self, item: ClozeItem) -> Request | str:
        """A request, or the reason the item cannot be scored (`multi_token`, `no_slot`...)."""
        if item.problem:
            return item.problem
        left, right = item.text.split(SLOT)
        obj = object_tokens(self.rule or self.tokenizer, left, item.obj)
        if len(obj) != 1:
            return "multi_token"
        if self.family is Family.ENCODER:
            return self._masked(left, right, obj[0])
        if self.family is Family.ENCODER_DECODER:
            return self._sentinel(left, right, obj[0])
        return self._next_token(left, obj[0])

    def _masked(self, left: str, right: str, target: int) -> Request | str:
        ids = token_ids(self.tokenizer, f"{left}{self.tokenizer.mask_token}{right}", special=True)
        mask_id = self.tokenizer.mask_token_id
        if ids.count(mask_id) != 1:
            return "mask_lost"
        return Request(tuple(ids), (ids.index(mask_id),), (target,))

    def _sentinel(self, left: str, right: str, target: int) -> Request:
        ids = token_ids(self.tokenizer, f"{left}{SENTINEL}{right}", special=True)
        start = self._decoder_start()
        return Request(tuple(ids), (1,), (target,), decoder_ids=(start, self._sentinel_id()))

    def _decoder_start(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return candidate
        return 0

    def _next_token(self, left: str, target: int) -> Request | str:
        rule = self.rule
        assert rule is not None  # set for decoders in __post_init__
        context = rule.encode(left.rstrip())
        if not context:  # slot first: condition on the prefix token, as lm-eval does
            if rule.prefix_id is None:
                return "no_context"
            context = [rule.prefix_id]
        return Request(tuple(context), (len(context) - 1,), (target,))


def score_clozes(
    loaded: Any,
    chosen: list[tuple[ClozeItem, dict[str, Any]]],
    rule: InputRule | None,
    *,
    unscorable: Callable[[dict[str, Any], str], None],
    max_tokens: int | None = None,
    progress: Any = None,
) -> list[tuple[dict[str, Any], Request, Scored]]:
    """Build each fact's request for `loaded` and score them in one engine run: (record,
    request, result) for every fact that has a request; `unscorable(record, reason)` for the
    others (`multi_token`, `no_slot`, ...)."""
    builder = ClozeBuilder(loaded.tokenizer, loaded.family, loaded.name, rule)
    requests, targets = [], []
    for item, record in chosen:
        built = builder.build(item)
        if isinstance(built, str):
            unscorable(record, built)
        else:
            requests.append(built)
            targets.append(record)
    scored = engine.score(
        loaded.model, loaded.family, requests, pad_id=engine.pad_id_of(loaded.tokenizer),
        max_tokens=max_tokens, progress=progress,
    )  # fmt: skip
    return list(zip(targets, requests, scored, strict=True))
