"""Loading: families from configs, local folders, compressed folders, clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.compress.saving import save_compressed
from knowcomp.errors import ModelNotFoundError
from knowcomp.models import Family, detect_family, load_model
from tests.conftest import TINY_CONFIGS, example_input

EXPECTED = {
    "bert": Family.ENCODER, "roberta": Family.ENCODER, "distilbert": Family.ENCODER,
    "albert": Family.ENCODER, "t5": Family.ENCODER_DECODER, "bart": Family.ENCODER_DECODER,
    "gpt2": Family.DECODER, "opt": Family.DECODER, "llama": Family.DECODER,
    "gpt_neox": Family.DECODER, "qwen2": Family.DECODER,
}  # fmt: skip


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_family_from_config(model_type):
    assert (
        detect_family(AutoConfig.for_model(model_type, **TINY_CONFIGS[model_type]))
        is (EXPECTED[model_type])
    )


def test_family_from_declared_architecture():
    config = AutoConfig.for_model("bert", architectures=["BertLMHeadModel"], is_decoder=True)
    assert detect_family(config) is Family.DECODER


def test_missing_path_is_one_clear_line():
    with pytest.raises(ModelNotFoundError, match=r"'\./no/such/model' does not exist"):
        load_model("./no/such/model")


def test_unknown_hub_id_offline_is_one_clear_line():
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache") as info:
        load_model("nobody-here/no-such-model")
    assert "\n" not in str(info.value)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        load_model(str(tmp_path))


def _save_tiny_with_tokenizer(loaded, folder):
    loaded.model.save_pretrained(folder)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0} | {f"w{i}": i for i in range(1, 120)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="w1"
    ).save_pretrained(folder)


@pytest.mark.parametrize("model_type", ["llama", "t5", "bert"])
def test_local_folder_loads_with_family(tiny, tmp_path, model_type):
    loaded = tiny(model_type)
    _save_tiny_with_tokenizer(loaded, tmp_path)
    again = load_model(str(tmp_path))
    assert again.family is loaded.family
    assert isinstance(again.tokenizer, type(AutoTokenizer.from_pretrained(tmp_path)))
    batch = example_input(loaded)
    assert torch.allclose(again.model(**batch).logits, loaded.model(**batch).logits)


@pytest.mark.parametrize(
    "recipe",
    [
        "prune:l1_unstructured:all_linear:0.5",
        "overall-gpq",
        "quant:weight_only:overall:bits=4:group_size=16",
        "quant:dynamic_int8:attention:backend=torchao",
    ],
)
@pytest.mark.parametrize("model_type", ["llama", "gpt2", "t5"])
def test_compressed_model_saves_and_loads_back(tiny, tmp_path, model_type, recipe):
    loaded = tiny(model_type)
    batch = example_input(loaded)
    report = CompressionSession(loaded).apply(parse_recipe(recipe))
    expected = loaded.model(**batch).logits
    save_compressed(loaded, report, tmp_path)
    again = load_model(str(tmp_path))
    assert again.family is loaded.family
    assert torch.equal(again.model(**batch).logits, expected)
    if not parse_recipe(recipe).has_quantization:  # pruned models load with plain transformers too
        from knowcomp.models.loading import AUTO_CLASSES

        plain = AUTO_CLASSES[loaded.family].from_pretrained(tmp_path)
        assert torch.equal(plain(**batch).logits, expected)
