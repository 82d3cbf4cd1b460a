"""Tiny randomly initialised models built from transformers configs, one per family member."""

from __future__ import annotations

import copy
import functools
import os
from typing import Any

import pytest
import torch
from transformers import AutoConfig

from knowcomp.models.family import detect_family
from knowcomp.models.loading import AUTO_CLASSES, LoadedModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# Tests score fresh models unless they point the baseline cache at their own tmp folder
# (tests/test_cache.py): a shared cache would let one test's baseline answer another's.
os.environ.setdefault("KNOWCOMP_BASELINE_CACHE", "off")

TINY_CONFIGS: dict[str, dict] = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, vocab_size=120),
    "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, vocab_size=120),
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=120),
    "albert": dict(hidden_size=32, embedding_size=16, num_hidden_layers=3,
                   num_attention_heads=2, intermediate_size=64, vocab_size=120),
    "t5": dict(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16,
               vocab_size=120),
    "bart": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                 vocab_size=120),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2, vocab_size=120, bos_token_id=0,
                 eos_token_id=0),
    "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
                vocab_size=120, word_embed_proj_dim=32),
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, intermediate_size=64, vocab_size=120,
                  tie_word_embeddings=True),
    # Decoders named nowhere in knowcomp: the generic rules must handle them.
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, vocab_size=120),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, intermediate_size=64, vocab_size=120),
}  # fmt: skip


def build_tiny(model_type: str, seed: int = 0) -> LoadedModel:
    config = AutoConfig.for_model(model_type, **TINY_CONFIGS[model_type])
    family = detect_family(config)
    torch.manual_seed(seed)
    model = AUTO_CLASSES[family].from_config(config).eval()
    return LoadedModel(model, None, family, f"tiny-{model_type}", "config")


@pytest.fixture
def tiny():
    """`tiny("llama")`: a fresh tiny model of that type."""
    return build_tiny


@functools.cache
def _smollm2_tokenizer() -> Any:
    from knowcomp.models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer (a real BPE vocabulary), a fresh copy, without its weights: a test
    that only tokenizes with it needs no `real_model` mark."""
    return copy.deepcopy(_smollm2_tokenizer())


def example_input(loaded: LoadedModel, length: int = 7) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 100, (2, length), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids}
    if loaded.family.value == "encoder-decoder":
        batch["decoder_input_ids"] = ids
    return batch


def save_tiny_llama(folder, tokenizer, **overrides) -> None:
    """A random 2-layer Llama with `tokenizer`'s vocabulary (seeded), saved with the tokenizer
    into `folder`: a real model folder for the CLI and studies. `overrides` change the config."""
    from transformers import AutoModelForCausalLM

    shape = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, vocab_size=len(tokenizer),
    )  # fmt: skip
    config = AutoConfig.for_model("llama", **(shape | overrides))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def results_file_without(db, column: str) -> None:
    """A knowcomp results file as written before `trials.column` existed, with one baseline
    trial in it."""
    import sqlite3

    from knowcomp.store import ResultsStore

    ResultsStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"ALTER TABLE trials DROP COLUMN {column}")
        conn.execute(
            "INSERT INTO trials (trial_key, study, spec_hash, model, sweep, seed, lama_mode, "
            "dtype, created) VALUES ('k', 's', 'h', 'm', 'baseline', 0, 'next-token', "
            "'float32', 0)"
        )
