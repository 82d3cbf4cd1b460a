"""Calibration text for GPTQ, SparseGPT and Wanda: `nsamples` blocks of `seqlen` tokens.

The default corpus is Wikipedia-derived text from the data directory: the LAMA T-REx evidence
sentences (with the masked object filled back in, one document per fact), the BoolQ passages and
the SciQ support paragraphs. A user's own text file (`--calibration FILE`) is split into
documents at blank lines. Documents are deduplicated and shuffled with the seed, tokenized in
that order, joined with the tokenizer's end-of-text token, and cut into consecutive blocks of
`seqlen` tokens until `nsamples` blocks are filled. The documents after the last one used were
never seen by calibration: `heldout_documents` gives them, in the same seeded order, for
evaluating on text the compression did not see.

Caveat: the default corpus contains the evidence sentences of LAMA's T-REx facts, so calibrated
methods see (some of) the facts that the T-REx probes ask about. Give `--calibration
data:boolq,sciq` (any subset of the three sources) or `--calibration FILE` for a corpus disjoint
from the probes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from knowcomp.data.readers import file_paragraphs
from knowcomp.errors import DataError, RecipeError

DEFAULT_SOURCE = "data"
DEFAULT_DATASETS = ("lama-trex-evidence", "boolq", "sciq")
_TOKENIZE_CHUNK = 256  # documents tokenized per call


@dataclass(frozen=True)
class CalibrationSpec:
    """Where calibration text comes from and how much of it: `nsamples` x `seqlen` tokens.

    `source` is `data` (the data directory's passages, see the module docstring) or the path of
    a UTF-8 text file. `seed` orders the documents; None means the seed given to
    `CompressionSession.apply`.
    """

    source: str = DEFAULT_SOURCE
    nsamples: int = 64
    seqlen: int = 512
    seed: int | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.nsamples < 1:
            raise RecipeError(f"calibration: nsamples must be at least 1, got {self.nsamples}")
        if self.seqlen < 2:
            raise RecipeError(f"calibration: seqlen must be at least 2, got {self.seqlen}")
        if self.source.startswith(DEFAULT_SOURCE + ":"):
            data_datasets(self.source)  # checks the names
        elif self.source != DEFAULT_SOURCE:
            path = Path(self.source)
            if not path.is_file():
                raise DataError(
                    f"calibration file '{self.source}' does not exist; give a UTF-8 text file, "
                    "or leave --calibration out to use the data directory's passages"
                )
            if path.stat().st_size == 0:
                raise DataError(f"calibration file '{self.source}' is empty; give a text file")

    def with_seed(self, seed: int) -> CalibrationSpec:
        """This spec with its seed fixed (`seed` is used only where the spec has none)."""
        if self.seed is not None:
            return self
        return CalibrationSpec(self.source, self.nsamples, self.seqlen, seed, self.data_dir)

    def describe(self) -> str:
        where = (
            "the data directory (" + ", ".join(data_datasets(self.source)) + ")"
            if is_data_source(self.source)
            else f"'{self.source}'"
        )
        return f"{self.nsamples} x {self.seqlen} tokens from {where}, seed {self.seed}"


@dataclass(frozen=True)
class Calibration:
    """Token blocks ready for the model: `tokens` is a [nsamples, seqlen] int64 tensor."""

    tokens: torch.Tensor
    spec: CalibrationSpec | None = None
    documents_used: int = 0
    documents_available: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_tokens(cls, tokens: torch.Tensor) -> Calibration:
        """Calibration from token ids you made yourself (tests, custom pipelines)."""
        if tokens.dim() != 2 or tokens.numel() == 0:
            raise RecipeError(
                f"calibration tokens must be a non-empty [nsamples, seqlen] tensor, "
                f"got shape {tuple(tokens.shape)}"
            )
        return cls(tokens.long())

    @property
    def nsamples(self) -> int:
        return self.tokens.shape[0]

    @property
    def seqlen(self) -> int:
        return self.tokens.shape[1]

    def to_dict(self) -> dict[str, Any]:
        """What the results store and `knowcomp.json` keep about the calibration."""
        spec = self.spec
        return {
            "source": spec.source if spec else "tokens",
            "nsamples": self.nsamples,
            "seqlen": self.seqlen,
            "seed": spec.seed if spec else None,
            "documents_used": self.documents_used,
            "documents_available": self.documents_available,
        }

    def describe(self) -> str:
        if self.spec is None:
            return f"{self.nsamples} x {self.seqlen} given tokens"
        return (
            f"{self.spec.describe()}; {self.documents_used:,} of "
            f"{self.documents_available:,} documents used"
        )


def is_data_source(source: str) -> bool:
    """`data` or `data:NAME,...`: passages from the data directory, not a file."""
    return source == DEFAULT_SOURCE or source.startswith(DEFAULT_SOURCE + ":")


def data_datasets(source: str) -> tuple[str, ...]:
    """The datasets a `data[:NAME,...]` source reads (all of DEFAULT_DATASETS for `data`)."""
    if source == DEFAULT_SOURCE:
        return DEFAULT_DATASETS
    names = tuple(n.strip() for n in source.removeprefix(DEFAULT_SOURCE + ":").split(","))
    unknown = [n for n in names if n not in DEFAULT_DATASETS]
    if unknown or not names:
        raise RecipeError(
            f"calibration source '{source}': unknown dataset {', '.join(unknown) or '(none)'}; "
            f"use data:NAME[,NAME] with names from {', '.join(DEFAULT_DATASETS)}"
        )
    return names


def corpus_documents(spec: CalibrationSpec) -> list[str]:
    """Every document of the spec's source, deduplicated, in the order its seed gives."""
    docs = (
        _data_documents(spec.data_dir, data_datasets(spec.source))
        if is_data_source(spec.source)
        else file_paragraphs(Path(spec.source))
    )
    unique = list(dict.fromkeys(d for d in docs if d))
    if not unique:
        raise DataError(
            f"calibration source '{spec.source}' holds no text; give a file with text in it"
        )
    random.Random(spec.seed or 0).shuffle(unique)
    return unique


def _data_documents(data_dir: str | None, datasets: tuple[str, ...]) -> list[str]:
    from knowcomp.data import load_multiple_choice, load_sciq, load_trex_evidence
    from knowcomp.data.records import MASK

    docs: list[str] = []
    if "lama-trex-evidence" in datasets:
        for fact in load_trex_evidence(data_dir):
            sentences = dict.fromkeys(
                s.replace(MASK, fact.obj_label) for s in fact.masked_sentences
            )
            docs.append(" ".join(sentences))
    if "boolq" in datasets:
        for item in load_multiple_choice("boolq", data_dir):  # "Passage: ...\nQuestion: ..."
            docs.append(item.query.split("\nQuestion:")[0].removeprefix("Passage:").strip())
    if "sciq" in datasets:
        docs.extend(item.support.strip() for item in load_sciq(data_dir))
    return docs


def build_calibration(tokenizer: Any, spec: CalibrationSpec) -> Calibration:
    """Tokenize the spec's documents in seeded order into [nsamples, seqlen] blocks.

    Each document is read as the probes read text (`probes.inputs`): with a BOS token first
    where the tokenizer adds one by default, and an end-of-text token after it."""
    from knowcomp.probes.inputs import adds_bos

    if tokenizer is None:
        raise RecipeError(
            "this model has no tokenizer, so calibration text cannot be tokenized; "
            "pass Calibration.from_tokens(ids) to the session"
        )
    documents = corpus_documents(spec)
    need = spec.nsamples * spec.seqlen
    separator = [tokenizer.eos_token_id or tokenizer.sep_token_id]
    separator = [t for t in separator if t is not None]
    start = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    ids: list[int] = []
    used = 0
    while len(ids) < need and used < len(documents):
        chunk = documents[used : used + _TOKENIZE_CHUNK]
        for doc_ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            used += 1
            ids.extend(start)
            ids.extend(doc_ids)
            ids.extend(separator)
            if len(ids) >= need:
                break
    if len(ids) < need:
        raise DataError(
            f"calibration text from {spec.source!r} has {len(ids):,} tokens, but nsamples x "
            f"seqlen = {spec.nsamples} x {spec.seqlen} needs {need:,}; give more text or "
            "lower --nsamples / --calibration-seqlen"
        )
    tokens = torch.tensor(ids[:need], dtype=torch.long).view(spec.nsamples, spec.seqlen)
    return Calibration(tokens, spec, used, len(documents))


def heldout_documents(calibration: Calibration) -> list[str]:
    """The documents of the same seeded order that `calibration` never read."""
    if calibration.spec is None:
        raise RecipeError("held-out text needs a calibration built from a CalibrationSpec")
    return corpus_documents(calibration.spec)[calibration.documents_used :]
