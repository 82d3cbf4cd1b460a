"""What a probe is and what it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
    # adaptive evaluation (`knowcomp.pipeline.adaptive`); None scores every item
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


def run_probe(probe: Probe, loaded: LoadedModel, options: RunOptions) -> ProbeResult:
    """`probe.run`, with the batch budget its loops started with in the result's options
    (`batch_tokens`) and, where an out-of-memory error lowered it, what it went down to
    (`batch_tokens_after_oom`) and a note (see `probes.batching`)."""
    from knowcomp.probes.batching import take_record

    take_record(loaded.model)  # forget what ran before this probe
    result = probe.run(loaded, options)
    record = take_record(loaded.model)
    if record.started is not None:
        result.options["batch_tokens"] = record.started
    if record.lowered_to is not None:
        result.options["batch_tokens_after_oom"] = record.lowered_to
        result.notes.append(
            f"out of memory {len(record.backoffs)} time(s): batches of up to {record.started} "
            f"padded tokens were split, down to {record.lowered_to} (the scores are those of "
            "an unsplit run)"
        )
    return result
