"""What a probe is and what it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from knowcomp.errors import KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.loading import LoadedModel


@dataclass
class ProbeResult:
    """Scores of one probe on one model, with every item's record for per-fact analysis."""

    probe: str
    category: str
    metrics: dict[str, float]
    counts: dict[str, int]
    records: list[dict[str, Any]] = field(repr=False, default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self, *, with_records: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_records:
            data.pop("records")
        return data


@dataclass(frozen=True)
class RunOptions:
    """Options every probe understands."""

    limit: int | None = None  # items per relation (LAMA) or per task
    seed: int = 0  # which `limit` items: the same seed takes the same subset
    data_dir: Path | None = None
    skip_malformed: bool = False
    max_tokens: int | None = None  # padded tokens per batch; None: the engine's device default
    progress: Any = None  # callable(n_done) or None
    # LAMA scoring: "next-token" (the object's rank in the vocabulary at the slot, every
    # family), "candidates" (rank every object of the relation by log-likelihood, decoders) or
    # "generate" (greedy generation, exact match of the object, decoders)
    lama_mode: str = "next-token"
    # LAMA protocol: "templates" (LAMA's) or "cost-of-compression" (the first study's; see
    # `probes.lama.protocols`)
    lama_protocol: str = "templates"
    max_new_tokens: int | None = None  # generation cap (QA, LAMA generate); None: 32 tokens
    # A BOS token first in a decoder's inputs: "auto" (where its tokenizer adds one by
    # default, as lm-evaluation-harness does), "true" or "false" (`knowcomp.probes.inputs`)
    add_bos: str = "auto"
    # Only the items whose seeded draw lies in [low, high) (`probes.sampling`): one chunk of
    # adaptive evaluation (`knowcomp.study.adaptive`); None scores every item
    part: tuple[float, float] | None = None


class Probe(ABC):
    """A knowledge probe: reads its dataset, scores a model, returns a `ProbeResult`."""

    name: ClassVar[str]
    category: ClassVar[str]
    dataset: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def count(self, options: RunOptions) -> int:
        """How many items a run with these options will score (for progress bars)."""

    @abstractmethod
    def run(self, loaded: LoadedModel, options: RunOptions) -> ProbeResult: ...

    def family_problem(self, family: Family, options: RunOptions) -> str | None:
        """Why this probe cannot score a model of `family` with these options, or None if it
        can: checked when a study is validated, before any model loads."""
        return None


def decoder_problem(family: Family, what: str) -> str | None:
    """The problem of running `what` (which needs a causal LM) on a model of `family`."""
    if family is Family.DECODER:
        return None
    return f"{what} score continuations with a decoder (causal LM)"


def continuation_problem(family: Family, what: str) -> str | None:
    """The problem of running `what`, which scores or generates continuations with a decoder
    (a causal LM, or the decoder of an encoder-decoder after its encoder read the context), on
    a model of `family`: only encoders, which fill masks and have no decoder, cannot."""
    if family is not Family.ENCODER:
        return None
    return f"{what} score continuations with a decoder (a causal LM or an encoder-decoder)"


def require_continuations(loaded: LoadedModel, what: str) -> None:
    """Raise a one-line error if `loaded` cannot run `what` (see `continuation_problem`)."""
    problem = continuation_problem(loaded.family, what)
    if problem is not None:
        raise KnowcompError(f"{problem}; {loaded.spec} is an {loaded.family.value}")
