"""How a probe's text becomes a decoder's input ids: the conventions of lm-evaluation-harness 0.4.

A probe measures what a model knows only if the model reads its input the way it was trained
to. Tokenizers differ in one way that matters most: many (Llama 2/3, Mistral, Gemma) put a
beginning-of-sequence (BOS) token first by default, and a model trained that way scores text
without it far below what it knows; others (GPT-2, SmolLM2, Qwen) add nothing. lm-eval's
`HFLM` keeps each tokenizer's default, and so does knowcomp: `input_rule` decides it once per
model and every decoder probe (log-likelihood pairs, LAMA, generation) and the calibration and
recovery text call it.

`add_bos` is `auto` (BOS exactly where the tokenizer adds one by default: what lm-eval does),
`true` (always a BOS first; an error if the tokenizer has none) or `false` (never; knowcomp's
rule before this module, `INPUT_RULE` 1). Where the tokenizer's default also adds tokens after
the text (a rare decoder tokenizer that appends EOS), knowcomp keeps the BOS only: lm-eval
would append the EOS to the context and cut the continuation one token late.

The rest follows lm-eval's `HFLM` (`tok_encode`, `_encode_pair`, `loglikelihood`,
`prefix_token_id`):

- text that already starts with the BOS token's text gets no second BOS;
- a context/continuation pair is split on the tokens of the whole text: `whole =
  encode(context + continuation)`, `ctx = encode(context)`, continuation = `whole[len(ctx):]`,
  so a sentencepiece marker or a leading space lands where the tokenizer puts it in context;
- an empty context becomes the prefix token alone (BOS if the tokenizer has one, else EOS),
  and the continuation is tokenized on its own without special tokens; if that continuation
  already starts with the prefix token, its first token becomes the context instead.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from knowcomp.errors import KnowcompError

BOS_SETTINGS = ("auto", "true", "false")
# 1: no special tokens ever, an empty context became EOS (knowcomp before BOS handling);
# 2: this module (lm-eval 0.4's conventions). Stored with every result.
INPUT_RULE = 2
_PROBE_TEXT = "The capital of France is Paris."
KNOWN_TEXTS = 500_000  # texts whose token ids a tokenizer remembers (then it starts over)
_KNOWN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _known_ids(tokenizer: Any) -> dict[str, tuple[int, ...]]:
    """The token ids `InputRule.plain` found for `tokenizer`, by text (kept while it lives)."""
    try:
        return _KNOWN.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: nothing remembered
        return {}


def check_bos_setting(value: Any) -> str:
    """`value` as one of `BOS_SETTINGS` (booleans and yes/no accepted), or a one-line error."""
    text = str(value).strip().lower()
    text = {"yes": "true", "no": "false", "1": "true", "0": "false"}.get(text, text)
    if text not in BOS_SETTINGS:
        raise KnowcompError(f"add_bos must be auto, true or false; got {value!r}")
    return text


def adds_bos(tokenizer: Any) -> bool:
    """Does the tokenizer put its BOS token first when asked for its default special tokens?"""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    default = list(tokenizer(_PROBE_TEXT)["input_ids"])
    plain = list(tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"])
    return len(default) > len(plain) and default[0] == bos and default[1:][: len(plain)] == plain


@dataclass(frozen=True)
class InputRule:
    """How text becomes input ids for one decoder: `add_bos` resolved for its tokenizer."""

    tokenizer: Any
    add_bos: bool
    setting: str = "auto"

    @property
    def bos_id(self) -> int | None:
        return getattr(self.tokenizer, "bos_token_id", None)

    @property
    def prefix_id(self) -> int | None:
        """The token an empty context becomes: BOS if the tokenizer has one, else EOS."""
        bos = self.bos_id
        return bos if bos is not None else getattr(self.tokenizer, "eos_token_id", None)

    def plain(self, text: str) -> list[int]:
        """Token ids of `text` without any special token (remembered per tokenizer: a study
        encodes the same texts for every trial)."""
        known = _known_ids(self.tokenizer)
        ids = known.get(text)
        if ids is None:
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(known) >= KNOWN_TEXTS:
                known.clear()
            known[text] = ids
        return list(ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` as the model reads it from the start of its input."""
        ids = self.plain(text)
        if not self.add_bos:
            return ids
        bos_text = getattr(self.tokenizer, "bos_token", None)
        if bos_text and text.startswith(bos_text):
            return ids
        return [self.bos_id, *ids]

    def split_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context tokens and continuation tokens, split as lm-evaluation-harness splits a pair
        (trailing whitespace of the context moves onto the continuation)."""
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        if not stripped:
            prefix = self.prefix_id
            if prefix is None:
                raise KnowcompError(
                    "an empty context needs a start or end-of-text token, and this tokenizer "
                    "has neither; give every item a non-empty context"
                )
            cont = self.plain(continuation)
            if cont and cont[0] == prefix:
                return cont[:1], cont[1:]
            return [prefix], cont
        context_ids = self.encode(stripped)
        whole = self.encode(stripped + continuation)
        return context_ids, whole[len(context_ids) :]

    def record(self) -> dict[str, Any]:
        """What is stored with every result scored under this rule."""
        return {"input_rule": INPUT_RULE, "add_bos": self.add_bos, "bos_setting": self.setting}


def input_rule(tokenizer: Any, setting: str = "auto") -> InputRule:
    """The one place that decides how a decoder's probes encode text (see the module doc)."""
    setting = check_bos_setting(setting)
    if setting == "auto":
        return InputRule(tokenizer, adds_bos(tokenizer), setting)
    if setting == "true" and getattr(tokenizer, "bos_token_id", None) is None:
        raise KnowcompError(
            "add_bos is true, but this tokenizer has no BOS token; use add_bos auto or false"
        )
    return InputRule(tokenizer, setting == "true", setting)


def decoder_rule(loaded: Any, setting: str = "auto") -> InputRule | None:
    """`loaded`'s input rule if it is a decoder; None for other families, whose inputs follow
    their own conventions (a masked LM's `[CLS] ... [SEP]`, an encoder-decoder's encoder text
    with the tokenizer's special tokens, as lm-eval's seq2seq backend reads it)."""
    from knowcomp.models.family import Family

    if loaded.family is not Family.DECODER:
        check_bos_setting(setting)
        return None
    return input_rule(loaded.tokenizer, setting)


def as_rule(tokenizer_or_rule: Any) -> InputRule:
    """An `InputRule` as it is, or a tokenizer's `auto` rule."""
    if isinstance(tokenizer_or_rule, InputRule):
        return tokenizer_or_rule
    return input_rule(tokenizer_or_rule)
