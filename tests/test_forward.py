"""One way to call a model of each family (`models.forward`), and the decoder guards."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.forward import (
    cache_kwarg,
    continuation_problem,
    decoder_problem,
    forward_kwargs,
    output_cache,
    require_continuations,
    require_decoder,
    with_cache,
)
from knowcomp.recovery.methods import RecoveryError, check_trainable

IDS = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])


@pytest.mark.parametrize("model_type", ["bert", "t5", "bart", "llama", "gpt2"])
def test_every_family_runs_on_its_arguments_and_keeps_no_cache(tiny, model_type):
    loaded = tiny(model_type)
    with torch.inference_mode():
        out = loaded.model(**forward_kwargs(loaded.family, IDS, MASK))
    assert out.logits.shape[:2] == IDS.shape
    assert getattr(out, "past_key_values", None) is None  # scoring keeps no key/value cache


def test_an_encoder_decoders_decoder_reads_the_same_ids_unless_told(tiny):
    t5 = tiny("t5")
    same = forward_kwargs(Family.ENCODER_DECODER, IDS, MASK)
    assert same["decoder_input_ids"] is IDS and same["decoder_attention_mask"] is MASK
    other = IDS[:, :3]
    told = forward_kwargs(Family.ENCODER_DECODER, IDS, MASK, decoder_input_ids=other)
    assert told["decoder_input_ids"] is other and "decoder_attention_mask" not in told
    with torch.inference_mode():
        explicit = t5.model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=IDS,
                            decoder_attention_mask=MASK).logits  # fmt: skip
        helped = t5.model(**same).logits
    assert torch.equal(explicit, helped)


def test_encoders_and_decoders_get_no_decoder_arguments():
    assert forward_kwargs(Family.ENCODER, IDS) == {"input_ids": IDS}
    decoder = forward_kwargs(Family.DECODER, IDS, MASK, decoder_input_ids=IDS)
    assert set(decoder) == {"input_ids", "attention_mask", "use_cache"}


@pytest.mark.parametrize(
    ("family", "decoder", "continues"),
    [(Family.DECODER, True, True), (Family.ENCODER_DECODER, False, True),
     (Family.ENCODER, False, False)],
)  # fmt: skip
def test_the_guards_say_which_families_can(family, decoder, continues):
    assert (decoder_problem(family, "x") is None) is decoder
    assert (continuation_problem(family, "x") is None) is continues


def test_a_guard_raises_one_line_naming_the_model_and_the_need(tiny):
    bert = tiny("bert")
    with pytest.raises(KnowcompError) as err:
        require_decoder(bert, "LAMA probes in generate mode")
    assert str(err.value) == (
        "LAMA probes in generate mode score continuations with a decoder (causal LM); "
        "tiny-bert is an encoder"
    )
    with pytest.raises(KnowcompError, match=r"^generation probes .* tiny-bert is an encoder$"):
        require_continuations(bert, "generation probes")
    require_continuations(tiny("t5"), "generation probes")  # encoder-decoders continue
    require_decoder(tiny("llama"), "anything")


def test_recovery_uses_the_same_guard_with_its_own_error(tiny):
    with pytest.raises(RecoveryError) as err:
        check_trainable(tiny("t5"))
    assert str(err.value) == (
        "recovery trains with next-token loss and needs a decoder (causal LM); "
        "tiny-t5 is an encoder-decoder"
    )


# -- the key/value cache's name (transformers renamed `past_key_values` to `cache`) ----------
class _OldNames(nn.Module):
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return input_ids


class _NewNames(nn.Module):
    def forward(self, input_ids=None, cache=None, use_cache=None):
        return input_ids


class _Wrapper(nn.Module):
    """As a PEFT model: keywords pass through to the base model."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def get_base_model(self) -> nn.Module:
        return self.base

    def forward(self, *args, **kwargs):
        return self.base(*args, **kwargs)


def test_the_cache_goes_by_the_name_the_model_takes():
    assert cache_kwarg(_OldNames()) == "past_key_values"
    assert cache_kwarg(_NewNames()) == "cache"
    assert cache_kwarg(_Wrapper(_OldNames())) == "past_key_values"
    assert cache_kwarg(_Wrapper(_NewNames())) == "cache"
    assert with_cache(_NewNames(), "kv") == {"cache": "kv"}
    assert output_cache(SimpleNamespace(cache="kv", past_key_values=None)) == "kv"
    assert output_cache(SimpleNamespace(past_key_values="kv")) == "kv"
    assert output_cache(SimpleNamespace(logits=None)) is None


def _cache_warnings(run) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught if "past_key_values" in str(w.message)]


def test_cached_paths_pass_the_cache_under_the_models_own_name(tiny):
    """Shared-context scoring, generation (both loops) and an attached prefix run without
    transformers' deprecation of the old name, and a prefix still applies when the caller
    passes an empty cache under either name (callers differ across transformers releases)."""
    from transformers import DynamicCache

    from knowcomp.probes import engine, generate_seq2seq
    from knowcomp.probes.generate import StopRule, generate
    from knowcomp.recovery.prefix import KVPrefix, prefixed

    llama, t5 = tiny("llama").model, tiny("t5").model
    rule = StopRule(stops=("never",), max_new_tokens=3)
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    groups = [((5, 6, 7), [(8, 9), (10, 11, 12)])]
    assert not _cache_warnings(lambda: engine.score_shared_context(llama, groups, pad_id=0))
    assert not _cache_warnings(lambda: generate(llama, prompts, decode=str, rule=rule))
    assert not _cache_warnings(lambda: generate_seq2seq.generate(
        t5, prompts, decode=str, rule=rule, eos_ids=frozenset(), pad_id=0, start_id=0))  # fmt: skip

    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        prefix = KVPrefix.from_cache(output_cache(llama(input_ids=torch.tensor([[3, 4]]),
                                                        use_cache=True)))  # fmt: skip
        with prefixed(llama, lambda kwargs: prefix, prefix.length):
            plain = llama(input_ids=ids).logits
            for name in ("cache", "past_key_values"):

                def run(name=name):  # a fresh empty cache each call
                    return llama(input_ids=ids, **{name: DynamicCache(config=llama.config)},
                                 use_cache=True).logits  # fmt: skip

                assert not _cache_warnings(run)
                torch.testing.assert_close(run(), plain)
        unprompted = llama(input_ids=ids).logits
    assert not torch.allclose(plain, unprompted)  # the prefix changed the logits
