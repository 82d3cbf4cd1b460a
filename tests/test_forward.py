"""One way to call a model of each family (`models.forward`), and the decoder guards."""

from __future__ import annotations

import pytest
import torch

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.forward import (
    continuation_problem,
    decoder_problem,
    forward_kwargs,
    require_continuations,
    require_decoder,
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
