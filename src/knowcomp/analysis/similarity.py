"""Layer-wise cosine similarity of a candidate model to the uncompressed reference.

The analysis of *Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024, Fig. 5): for each
layer, how close the compressed (or compressed and recovered) model's hidden activations and
attention maps stay to the uncompressed model's on the same texts.

- **Hidden activations**: each layer's output (`output_hidden_states`, without the embedding
  output; transformers reports the last layer after the final norm where the model has one),
  compared token by token over the real (non-padded) tokens; the mean over every token of every
  text.
- **Attention maps**: each query row of each head (`output_attentions`), the attention
  distribution over the input tokens, compared as vectors; the mean over every head, real query
  position and text. A candidate that carries a prefix (prefix tuning: P extra key/value
  positions before the input) has rows of P + T columns where the reference has T: only the last
  T columns (the input tokens) are compared, renormalised to sum to 1. A soft prompt given as P
  extra input positions (prompt tuning) adds P rows and hidden positions too: only the last T
  are compared. The P found is recorded in the result.

Nothing here knows an architecture: any transformers model that returns hidden states and
attention maps works. Attention maps need the eager attention implementation; it is switched
on for the measurement and the model's own is restored after. Encoder-decoder models are
compared on their encoder's layers.

Two ways to run: with two models (`layerwise_similarity(reference_model, candidate, batches)`),
each batch runs through both and only per-layer sums are kept, so memory does not grow with
the number of texts. With one model compressed in place (a `CompressionSession`), the reference
runs first and `ReferenceStates.capture` keeps its per-layer outputs on the real tokens, so the
same texts can be compared after compression; that memory grows with texts x tokens x layers
(`ReferenceStates.nbytes`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from knowcomp.errors import DataError, KnowcompError
from knowcomp.models.family import Family, detect_family
from knowcomp.models.forward import forward_kwargs

DEFAULT_TEXTS = 16
DEFAULT_MAX_LENGTH = 128
DEFAULT_BATCH_SIZE = 8
TEXTS_SOURCE = "LAMBADA passages (data directory), seeded sample"

Batch = dict[str, torch.Tensor]
Progress = Callable[[int], None]  # called with the number of texts just done


@dataclass(frozen=True)
class LayerSimilarity:
    """One layer: mean cosine similarity of attention rows and of hidden states (None: the
    model gives no attention maps)."""

    layer: int
    attention_cosine: float | None
    hidden_cosine: float


@dataclass
class SimilarityResult:
    """Per-layer similarity of a candidate to the reference on `texts` texts."""

    layers: list[LayerSimilarity]
    texts: int
    tokens: int  # real (non-padded) input tokens compared per layer
    stack: str = "decoder"  # whose layers: "decoder", "encoder" (encoder-only or encoder-decoder)
    prefix_keys: int = 0  # P: extra key positions before the input in the candidate's attention
    prompt_positions: int = 0  # extra input positions (a soft prompt) in the candidate
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(layer) | {"texts": self.texts} for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- texts and batches ----------------------------------------------------------------------
def default_texts(
    count: int = DEFAULT_TEXTS, *, seed: int = 0, data_dir: Path | str | None = None
) -> list[str]:
    """`count` LAMBADA passages (book text, disjoint from the calibration corpus), a seeded
    sample in file order: the same texts for every model and every compression."""
    from knowcomp.data import load_lambada

    passages = [f"{item.context} {item.continuation}" for item in load_lambada(data_dir)]
    if count < 1:
        raise KnowcompError(f"the number of texts must be at least 1, got {count}")
    chosen = sorted(random.Random(seed).sample(range(len(passages)), min(count, len(passages))))
    return [passages[i] for i in chosen]


def read_texts(path: Path | str, limit: int | None = None) -> list[str]:
    """Texts from a UTF-8 file, one per paragraph (paragraphs are split at blank lines)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"texts file '{path}' does not exist or is not a file; give a text file")
    from knowcomp.data.readers import file_paragraphs

    texts = [t for t in file_paragraphs(path, "texts file") if t]
    if not texts:
        raise DataError(f"texts file '{path}' holds no text; give paragraphs of text")
    return texts[:limit] if limit else texts


def make_batches(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> list[Batch]:
    """Tokenize `texts` into right-padded batches (`input_ids`, `attention_mask`), each text cut
    to `max_length` tokens. Right padding leaves every real token's position unchanged."""
    if tokenizer is None:
        raise KnowcompError("this model has no tokenizer; give token batches instead of texts")
    if not texts:
        raise KnowcompError("no texts to compare on; give at least one text")
    if batch_size < 1 or max_length < 1:
        raise KnowcompError("batch size and max length must be at least 1")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise KnowcompError("the tokenizer has no pad or end-of-text token to pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            list(texts[start : start + batch_size]), padding=True, truncation=True,
            max_length=max_length, padding_side="right", return_tensors="pt",
        )  # fmt: skip
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        empty = (batch["attention_mask"].sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise KnowcompError(f"text {start + empty[0] + 1} has no tokens; remove it")
        batches.append(batch)
    return batches


# -- running a model ------------------------------------------------------------------------
@dataclass
class _Outputs:
    """One batch through one model, on its real tokens: per layer, hidden [N, d] and
    attention [N, H, T] (input columns only, rows summing to 1; None without maps)."""

    hidden: list[torch.Tensor]
    attention: list[torch.Tensor] | None
    stack: str
    prefix_keys: int = 0
    prompt_positions: int = 0
    notes: list[str] = field(default_factory=list)


def _pretrained(model: nn.Module) -> PreTrainedModel:
    """The outermost transformers model in `model` (itself, or the one a wrapper holds)."""
    found = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if found is None:
        raise KnowcompError(
            f"{type(model).__name__} holds no transformers model; layer-wise similarity needs one"
        )
    return found


# An attention implementation -> its variant that also returns attention maps, for those that
# must keep their own behaviour while measured (IDP's prompt choice: `recovery.idp`).
EAGER_VARIANTS: dict[str, str] = {}


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[bool]:
    """Switch `model` to eager attention (the one that returns attention maps), or to the
    variant of its own attention that returns them (`EAGER_VARIANTS`), and restore its own
    implementation after; yields whether attention maps will come back."""
    config = _pretrained(model).config
    before = getattr(config, "_attn_implementation", None)
    target = EAGER_VARIANTS.get(str(before), "eager")
    if before == target:
        yield True
        return
    with suppress(ValueError, ImportError, AttributeError):
        _pretrained(model).set_attn_implementation(target)
    try:
        yield config._attn_implementation == target
    finally:
        if before is not None and config._attn_implementation != before:
            _pretrained(model).set_attn_implementation(before)


@contextmanager
def _measuring(model: nn.Module) -> Iterator[bool]:
    """Eager attention, evaluation mode and inference mode, each restored after."""
    training = model.training
    model.eval()
    try:
        with eager_attention(model) as eager, torch.inference_mode():
            yield eager
    finally:
        if training:
            model.train()


def _run(model: nn.Module, batch: Batch, eager: bool) -> _Outputs:
    core = _pretrained(model)
    stack, runner, notes = "decoder", model, []
    if getattr(core.config, "is_encoder_decoder", False):
        stack, runner = "encoder", core.get_encoder()
        notes.append(f"{type(core).__name__} is an encoder-decoder: its encoder's layers are "
                     "compared (the decoder's are not)")  # fmt: skip
    elif _is_encoder(core):
        stack = "encoder"
    device = next(core.parameters()).device
    mask = batch["attention_mask"]
    family = Family.ENCODER if stack == "encoder" else Family.DECODER  # what `runner` is
    out = runner(
        **forward_kwargs(family, batch["input_ids"].to(device), mask.to(device)),
        output_hidden_states=True, output_attentions=eager, return_dict=True,
    )  # fmt: skip
    real = mask.bool().to(device)
    length = mask.shape[1]
    states = getattr(out, "hidden_states", None)
    if not states or len(states) < 2:
        raise KnowcompError(
            f"{type(core).__name__} returns no hidden states of its layers; "
            "layer-wise similarity needs output_hidden_states"
        )
    prompt = states[0].shape[1] - length
    if prompt < 0:
        raise KnowcompError(
            f"{type(core).__name__} returned {states[0].shape[1]} positions for {length} tokens"
        )
    hidden = [h[:, prompt:, :][real] for h in states[1:]]
    maps = getattr(out, "attentions", None)
    attention, prefix = None, 0
    if maps and all(a is not None for a in maps):
        attention = []
        for a in maps:  # [B, H, queries, keys]
            prefix = a.shape[-1] - length
            rows = a[:, :, a.shape[2] - length :, prefix:]
            if prefix:
                rows = rows / rows.sum(-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
            attention.append(rows.transpose(1, 2)[real])  # [N, H, T]
    else:
        notes.append(
            f"{type(core).__name__} returned no attention maps (attention implementation "
            f"{core.config._attn_implementation!r}); only hidden states are compared"
        )
    return _Outputs(hidden, attention, stack, prefix, prompt, notes)


def _is_encoder(core: PreTrainedModel) -> bool:
    try:
        return detect_family(core.config) is Family.ENCODER
    except KnowcompError:
        return False


# -- the reference, kept ---------------------------------------------------------------------
@dataclass
class ReferenceStates:
    """The reference model's per-layer outputs on `batches`, kept on the real tokens so that
    candidates (the same model compressed in place, say) can be compared with it later."""

    batches: list[Batch]
    outputs: list[_Outputs]

    @classmethod
    def capture(
        cls, model: nn.Module, batches: Sequence[Batch], *, progress: Progress | None = None
    ) -> ReferenceStates:
        outputs = []
        with _measuring(model) as eager:
            for batch in batches:
                outputs.append(_run(model, batch, eager))
                if progress is not None:
                    progress(batch["input_ids"].shape[0])
        return cls(list(batches), outputs)

    @property
    def texts(self) -> int:
        return sum(b["input_ids"].shape[0] for b in self.batches)

    @property
    def nbytes(self) -> int:
        """Memory held by the kept outputs."""
        tensors = [t for o in self.outputs for t in [*o.hidden, *(o.attention or [])]]
        return sum(t.numel() * t.element_size() for t in tensors)


# -- comparing -------------------------------------------------------------------------------
def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension, in float64 (0 where a vector is zero)."""
    a, b = a.double(), b.double()
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    return (a * b).sum(-1) / norms.clamp_min(1e-300)


class _Sums:
    def __init__(self) -> None:
        self.hidden: list[float] = []
        self.attention: list[float] | None = []
        self.tokens = 0
        self.rows = 0
        self.texts = 0
        self.prefix_keys = 0
        self.prompt_positions = 0
        self.stack = "decoder"
        self.notes: list[str] = []

    def add(self, ref: _Outputs, cand: _Outputs, texts: int) -> None:
        if len(ref.hidden) != len(cand.hidden):
            raise KnowcompError(
                f"the reference has {len(ref.hidden)} layers and the candidate "
                f"{len(cand.hidden)}; compare a model with a compressed copy of itself"
            )
        if not self.hidden:
            self.hidden = [0.0] * len(ref.hidden)
            self.attention = [0.0] * len(ref.hidden)
        for i, (r, c) in enumerate(zip(ref.hidden, cand.hidden, strict=True)):
            if r.shape != c.shape:
                raise KnowcompError(
                    f"layer {i}: reference hidden states {tuple(r.shape)} and candidate "
                    f"{tuple(c.shape)} differ in shape; compare the same model on the same texts"
                )
            self.hidden[i] += _cosines(r, c.to(r.device)).sum().item()
        if ref.attention is None or cand.attention is None:
            self.attention = None
        elif self.attention is not None:
            for i, (r, c) in enumerate(zip(ref.attention, cand.attention, strict=True)):
                self.attention[i] += _cosines(r, c.to(r.device)).sum().item()
            self.rows += ref.attention[0].shape[0] * ref.attention[0].shape[1]
        self.tokens += ref.hidden[0].shape[0]
        self.texts += texts
        self.prefix_keys = max(self.prefix_keys, cand.prefix_keys)
        self.prompt_positions = max(self.prompt_positions, cand.prompt_positions)
        self.stack = ref.stack
        self.notes += [n for n in ref.notes + cand.notes if n not in self.notes]

    def result(self) -> SimilarityResult:
        if not self.tokens:
            raise KnowcompError("no tokens were compared; give at least one non-empty text")
        attention = self.attention
        layers = [
            LayerSimilarity(
                i,
                attention[i] / self.rows if attention is not None and self.rows else None,
                h / self.tokens,
            )
            for i, h in enumerate(self.hidden)
        ]
        notes = list(self.notes)
        if self.prefix_keys:
            notes.append(
                f"the candidate's attention has {self.prefix_keys} prefix key position(s) "
                "before the input; only the input columns were compared, renormalised to sum to 1"
            )
        if self.prompt_positions:
            notes.append(
                f"the candidate has {self.prompt_positions} soft-prompt position(s) before the "
                "input; only the input positions were compared"
            )
        return SimilarityResult(layers, self.texts, self.tokens, self.stack, self.prefix_keys,
                                self.prompt_positions, notes)  # fmt: skip


def layerwise_similarity(
    reference: nn.Module | ReferenceStates,
    candidate: nn.Module,
    batches: Sequence[Batch] | None = None,
    *,
    progress: Progress | None = None,
) -> SimilarityResult:
    """Per-layer cosine similarity of `candidate` to `reference` on `batches`.

    `reference` is a model (each batch runs through both models; only sums are kept) or the
    `ReferenceStates` captured from the uncompressed model (then `batches` defaults to its
    own, and must be the same if given). Batches come from `make_batches`.
    """
    if isinstance(reference, ReferenceStates):
        if batches is not None and not _same_batches(batches, reference.batches):
            raise KnowcompError("the batches differ from those the reference was captured on")
        batches = reference.batches
    elif batches is None:
        raise KnowcompError("give the batches to compare on (see make_batches)")
    if not batches:
        raise KnowcompError("no batches to compare on; give at least one text")
    sums = _Sums()
    with ExitStack() as stack:
        eager = stack.enter_context(_measuring(candidate))
        if not isinstance(reference, ReferenceStates):
            ref_eager = stack.enter_context(_measuring(reference))
        for i, batch in enumerate(batches):
            if isinstance(reference, ReferenceStates):
                ref = reference.outputs[i]
            else:
                ref = _run(reference, batch, ref_eager)
            sums.add(ref, _run(candidate, batch, eager), batch["input_ids"].shape[0])
            if progress is not None:
                progress(batch["input_ids"].shape[0])
    return sums.result()


def _same_batches(a: Sequence[Batch], b: Sequence[Batch]) -> bool:
    return len(a) == len(b) and all(
        x["input_ids"].shape == y["input_ids"].shape and torch.equal(x["input_ids"], y["input_ids"])
        for x, y in zip(a, b, strict=True)
    )
