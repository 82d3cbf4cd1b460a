"""Real T5 and BART tokenizers built offline, and tiny random encoder-decoders that fit them.

No tokenizer files can be downloaded here, so each builder trains a small vocabulary with the
`tokenizers` library on the texts a test scores (a Unigram model for T5, byte-level BPE for
BART, as the real ones are) and wraps it in transformers' own `T5Tokenizer` / `BartTokenizer`,
which add the families' special tokens and conventions (T5 appends `</s>` and has no BOS; BART
wraps a text in `<s> ... </s>`). The model's vocabulary is the tokenizer's, and its special ids
are the tokenizer's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForSeq2SeqLM, BartTokenizer, T5Tokenizer

from knowcomp.models.family import Family
from knowcomp.models.loading import LoadedModel

# A few sentences so that the vocabulary has common words and punctuation whatever the texts.
BASE_TEXT = (
    "Question: what is the capital of France? Answer: Paris, of course.",
    "The passage says yes; the answer is no. Is it true? Yes, it is!",
    "She put the pan on the stove, then poured water (about 2 cups) into it.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1999 - and 'quotes' \"too\".",
)


def t5_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> T5Tokenizer:
    """A T5 tokenizer (Unigram, `<pad>`=0, `</s>`=1, `<unk>`=2, no extra ids) trained on `texts`."""
    trained = Tokenizer(models.Unigram())
    trained.pre_tokenizer = pre_tokenizers.Metaspace()
    trained.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    trained.train_from_iterator([*BASE_TEXT, *texts], trainer)
    vocab = json.loads(trained.to_str())["model"]["vocab"]
    # The trainer's scores vary in their last digits from run to run, and it orders pieces of
    # equal score at random: round and sort them, so that the pieces, their ids (and with them
    # the seeded random model's outputs) are the same every run.
    pieces = sorted((piece, round(score, 2)) for piece, score in vocab[3:])
    pieces.sort(key=lambda ps: -ps[1])  # stable: equal scores stay in piece order
    return T5Tokenizer(vocab=[*map(tuple, vocab[:3]), *pieces], extra_ids=0)


def bart_tokenizer(texts: Iterable[str], vocab_size: int = 500) -> BartTokenizer:
    """A BART tokenizer (byte-level BPE, `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4)
    trained on `texts`."""
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    trained.train_from_iterator([*BASE_TEXT, *texts], trainer)
    model = json.loads(trained.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return BartTokenizer(vocab=model["vocab"], merges=merges)


def tiny_seq2seq(model_type: str, tokenizer, seed: int = 0, **overrides: Any) -> LoadedModel:
    """A tiny random T5 or BART whose vocabulary and special ids are `tokenizer`'s; `overrides`
    change its config (e.g. `max_position_embeddings`)."""
    sizes = {
        "t5": dict(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                   d_kv=16, decoder_start_token_id=tokenizer.pad_token_id),
        "bart": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=
                     tokenizer.eos_token_id, forced_eos_token_id=tokenizer.eos_token_id),
    }[model_type]  # fmt: skip
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, **(sizes | overrides),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config).eval()
    return LoadedModel(model, tokenizer, Family.ENCODER_DECODER, f"tiny-{model_type}", "config")


def build(model_type: str, texts: Iterable[str], seed: int = 0) -> LoadedModel:
    """A tokenizer trained on `texts` and a tiny model of `model_type` ("t5" or "bart") for it."""
    make = {"t5": t5_tokenizer, "bart": bart_tokenizer}[model_type]
    return tiny_seq2seq(model_type, make(list(texts)), seed)
