"""Decoder tokenizers of every convention that matters for scoring, built offline.

Each is a small BPE trained here (with the `tokenizers` library) on a fixed text, wrapped in
`PreTrainedTokenizerFast` with the special tokens and post-processor of one real family:

- `gpt2`: byte-level BPE, no prefix space, BOS = EOS = `<|endoftext|>`, nothing added (GPT-2,
  Pythia, SmolLM2 add nothing either);
- `gpt2-prefix-space`: the same with `add_prefix_space` (RoBERTa-style byte level);
- `llama2`: sentencepiece-style (Metaspace `▁`, prepended to the first word only), `<s>` added
  first by default (Llama 2, Mistral, Gemma);
- `llama3`: byte-level BPE with `<|begin_of_text|>` added first by default (Llama 3);
- `bos-is-eos`: byte-level BPE whose BOS is its EOS and is added first by default.
"""

from __future__ import annotations

from functools import cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CONVENTIONS = ("gpt2", "gpt2-prefix-space", "llama2", "llama3", "bos-is-eos")
ADDS_BOS = {"gpt2": False, "gpt2-prefix-space": False, "llama2": True, "llama3": True,
            "bos-is-eos": True}  # fmt: skip

_TEXT = """The capital of France is Paris. The capital of Italy is Rome.
Question: Which tool is best to cut paper?
Answer: scissors
Paris, Rome, Berlin and Madrid are capitals; the Nile is a river in Africa.
A man is sitting on a roof. He starts pulling up roofing on the roof.
It was a dark and stormy night; the ship's captain steered into the harbour.
Born in 1879, Albert Einstein developed the theory of relativity in Germany.
Water boils at 100 degrees. Photosynthesis turns light into chemical energy.
Rome Paris Germany Africa Italy France
"""


def _corpus() -> list[str]:
    lines = _TEXT.splitlines()
    return [line for _ in range(20) for line in lines]


@cache
def build(convention: str) -> PreTrainedTokenizerFast:
    """The tokenizer of `convention` (one of `CONVENTIONS`), trained once per process."""
    if convention == "llama2":
        return _sentencepiece_style()
    bos = {"llama3": "<|begin_of_text|>"}.get(convention, "<|endoftext|>")
    eos = "<|endoftext|>"
    specials = list(dict.fromkeys([bos, eos, "<pad>"]))
    prefix = convention == "gpt2-prefix-space"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=900, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(_corpus(), trainer)
    if ADDS_BOS[convention]:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token="<pad>",
        add_prefix_space=prefix,
    )  # fmt: skip


def _sentencepiece_style() -> PreTrainedTokenizerFast:
    """Llama 2's layout: `▁` for spaces, one prepended to the first word, `<s>` first."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=900, special_tokens=["<unk>", "<s>", "</s>", *bytes_], show_progress=False
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
