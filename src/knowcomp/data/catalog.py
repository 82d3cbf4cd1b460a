"""The datasets knowcomp knows: where each lives in the data directory and how many rows it has.

The catalog is the single source of truth for the evaluation data mirror's layout (see
`shared/data/PROVENANCE.md`): the importer checks row counts against it, the loaders find files
through it, and `knowcomp data list` prints it. Files are listed exactly (not as globs) so that a
partly copied dataset is detected instead of silently yielding fewer rows.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from knowcomp.errors import DataError

# Categories, by the kind of probe that reads them.
LAMA_CLOZE = "lama-cloze"
TEMPLATES = "templates"
MULTIPLE_CHOICE = "multiple-choice"
COMPLETION = "completion"
OPEN_QA = "open-qa"

# The 41 T-REx relations with facts, and the 28 of them whose evidence files are mirrored.
TREX_RELATIONS: tuple[str, ...] = (
    "P17", "P19", "P20", "P27", "P30", "P31", "P36", "P37", "P39", "P47", "P101", "P103", "P106",
    "P108", "P127", "P131", "P136", "P138", "P140", "P159", "P176", "P178", "P190", "P264",
    "P276", "P279", "P361", "P364", "P407", "P413", "P449", "P463", "P495", "P527", "P530",
    "P740", "P937", "P1001", "P1303", "P1376", "P1412",
)  # fmt: skip
TREX_EVIDENCE_RELATIONS: tuple[str, ...] = (
    "P19", "P20", "P27", "P31", "P39", "P101", "P103", "P106", "P108", "P127", "P136", "P138",
    "P140", "P159", "P176", "P178", "P264", "P364", "P407", "P413", "P449", "P463", "P495",
    "P527", "P740", "P937", "P1303", "P1412",
)  # fmt: skip
GOOGLE_RE_RELATIONS: tuple[str, ...] = ("place_of_birth", "date_of_birth", "place_of_death")


@dataclass(frozen=True)
class Dataset:
    """One dataset of the mirror.

    `files` are paths relative to the data directory, in POSIX form; `format` names the loader
    that reads them (see `knowcomp.data.loaders`); `rows` is the number of records the loader
    yields for the whole dataset, as published in PROVENANCE.md and counted on the real files.
    """

    name: str
    category: str
    format: str
    files: tuple[str, ...]
    rows: int
    description: str

    @property
    def location(self) -> str:
        """A short display form of where the dataset lives: its file, or its folder and count."""
        if len(self.files) == 1:
            return self.files[0]
        folder = posixpath.commonpath(self.files)
        suffix = posixpath.splitext(self.files[0])[1]
        return f"{folder}/*{suffix} ({len(self.files)} files)"


def _files(folder: str, stems: tuple[str, ...], suffix: str = ".jsonl") -> tuple[str, ...]:
    return tuple(f"{folder}/{stem}{suffix}" for stem in stems)


_DATASETS: tuple[Dataset, ...] = (
    Dataset(
        "lama-trex",
        LAMA_CLOZE,
        "lama-facts",
        _files("lama/trex_facts", TREX_RELATIONS),
        29_411,
        "LAMA T-REx facts (subject, object, uuid), 41 relations, objects in the common LM vocab",
    ),
    Dataset(
        "lama-trex-evidence",
        LAMA_CLOZE,
        "trex-evidence",
        _files("lama/trex_evidence", TREX_EVIDENCE_RELATIONS),
        22_881,
        "LAMA T-REx facts with Wikipedia evidence sentences; 28 of the 41 relations, unfiltered",
    ),
    Dataset(
        "lama-google-re",
        LAMA_CLOZE,
        "google-re",
        _files("lama/google_re", tuple(f"{r}_test" for r in GOOGLE_RE_RELATIONS)),
        5_528,
        "LAMA Google-RE: place/date of birth, place of death, with masked sentences and ratings",
    ),
    Dataset(
        "lama-squad",
        LAMA_CLOZE,
        "squad-cloze",
        ("lama/squad/test.jsonl",),
        305,
        "LAMA SQuAD: cloze sentences made from SQuAD questions",
    ),
    Dataset(
        "lama-conceptnet-subset",
        LAMA_CLOZE,
        "conceptnet",
        ("lama/conceptnet_subset/ConceptNet.jsonl",),
        146,
        "A random 146-fact subset of LAMA ConceptNet (not the full ~29k-fact probe)",
    ),
    Dataset(
        "lama-relations",
        TEMPLATES,
        "relation-templates",
        ("lama/relations.jsonl",),
        46,
        "LAMA T-REx relation templates ([X] was born in [Y] .); 5 have no facts in the mirror",
    ),
    Dataset(
        "boolq",
        MULTIPLE_CHOICE,
        "multiple-choice",
        ("mc/boolq.jsonl",),
        3_270,
        "BoolQ dev: passage + yes/no question",
    ),
    Dataset(
        "piqa",
        MULTIPLE_CHOICE,
        "multiple-choice",
        ("mc/piqa.jsonl",),
        1_838,
        "PIQA dev: physical commonsense, two solutions",
    ),
    Dataset(
        "winogrande",
        MULTIPLE_CHOICE,
        "winogrande",
        ("mc/winogrande.jsonl",),
        1_267,
        "WinoGrande dev (xl), partial scoring: two contexts, one continuation",
    ),
    Dataset(
        "arc-easy",
        MULTIPLE_CHOICE,
        "multiple-choice",
        ("mc/arc_easy.jsonl",),
        2_376,
        "ARC-Easy test: grade-school science, four choices",
    ),
    Dataset(
        "arc-challenge",
        MULTIPLE_CHOICE,
        "multiple-choice",
        ("mc/arc_challenge.jsonl",),
        1_172,
        "ARC-Challenge test: grade-school science, four choices",
    ),
    Dataset(
        "lambada",
        COMPLETION,
        "lambada",
        ("mc/lambada_openai.jsonl",),
        5_153,
        "LAMBADA (OpenAI version) test: predict the last word of a passage",
    ),
    Dataset(
        "hellaswag",
        MULTIPLE_CHOICE,
        "hellaswag",
        ("mc/hellaswag/hellaswag_val_full.txt.bz2",),
        10_042,
        "HellaSwag validation: pick the ending of a context among four",
    ),
    Dataset(
        "sciq",
        MULTIPLE_CHOICE,
        "sciq",
        ("mc/sciq_test.csv",),
        1_000,
        "SciQ test: science questions with SciQ's own three distractors (884 with support)",
    ),
    Dataset(
        "triviaqa",
        OPEN_QA,
        "triviaqa",
        ("qa/triviaqa_subset.jsonl",),
        3_000,
        "TriviaQA, a 3,000-question subset, open answer with aliases",
    ),
    Dataset(
        "webqs",
        OPEN_QA,
        "webquestions",
        ("qa/webquestions_test.json",),
        2_032,
        "WebQuestions test, open answer",
    ),
)

_BY_NAME: dict[str, Dataset] = {dataset.name: dataset for dataset in _DATASETS}


def datasets() -> tuple[Dataset, ...]:
    """Every dataset of the catalog, in display order."""
    return _DATASETS


def dataset_names() -> tuple[str, ...]:
    """The names `get_dataset` accepts."""
    return tuple(_BY_NAME)


def get_dataset(name: str) -> Dataset:
    """The catalog entry named `name`; a `DataError` listing the known names otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(_BY_NAME)
        hint = ""
        if name == "lama-conceptnet":
            hint = " (only a 146-fact subset is available offline: use lama-conceptnet-subset)"
        raise DataError(f"unknown dataset {name!r}{hint}; known datasets: {known}") from None
