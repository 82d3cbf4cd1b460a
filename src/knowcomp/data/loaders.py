"""Read a dataset of the data directory as a stream of typed records.

`load(name)` works for every dataset of the catalog; the `load_*` functions, one per file format,
return precisely typed streams. A stream reads its files lazily, line by line, each time it is
iterated, so a probe can walk 30k facts without holding them. A missing file is a `DataError`
that names the dataset, the path looked at and the fix; a malformed line is a `DataError` naming
file and line, unless the stream was opened with `skip_malformed=True`, in which case the line is
skipped and recorded in `stream.skipped`.

Streams that `load` opens remember the records of each file they read to the end, keyed by
the file's identity, size and modification time (`_ParsedFiles`, bounded by file size): a study
reads the same files for every trial, and parsing them again cost half a second a trial on
T-REx. A file that changes is read again; the importer's checks always read the bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from knowcomp.data import parsers, readers
from knowcomp.data.catalog import Dataset, get_dataset
from knowcomp.data.readers import Malformed
from knowcomp.data.records import (
    ConceptNetFact,
    GoogleReFact,
    HellaSwagItem,
    LamaFact,
    LambadaItem,
    MultipleChoiceItem,
    RelationTemplate,
    SciQItem,
    SquadCloze,
    TrexEvidence,
    TriviaQAItem,
    WebQuestion,
    WinograndeItem,
)
from knowcomp.errors import DataError
from knowcomp.paths import data_dir as default_data_dir

R = TypeVar("R")

MEMO_BYTES = 256 * 2**20  # file bytes whose parsed records stay in memory between reads


class _ParsedFiles:
    """Parsed records of whole files, least recently used first out, within `MEMO_BYTES`."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: dict[tuple, tuple[tuple, tuple, int]] = {}

    @staticmethod
    def key(path: Path, dataset: str, skip_malformed: bool) -> tuple | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
                dataset, skip_malformed)  # fmt: skip

    def get(self, key: tuple) -> tuple[tuple, tuple] | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._entries[key] = entry  # most recently used last
        return entry[0], entry[1]

    def put(self, key: tuple, records: list, skipped: list) -> None:
        size = key[3]
        if size > self.budget:
            return
        self._entries[key] = (tuple(records), tuple(skipped), size)
        while sum(e[2] for e in self._entries.values()) > self.budget:
            self._entries.pop(next(iter(self._entries)))


_PARSED = _ParsedFiles(MEMO_BYTES)

IMPORT_FIX = (
    "run `knowcomp data import PATH` with PATH the evaluation data mirror (e.g. ../shared/data), "
    "or set KNOWCOMP_DATA to a folder that holds it"
)


@dataclass(frozen=True)
class _Format:
    read: Callable[[Path], Iterator[readers.Item]]
    parse: parsers.Parser


def _read_sciq(path: Path) -> Iterator[readers.Item]:
    return readers.read_csv(path, parsers.SCIQ_COLUMNS)


FORMATS: dict[str, _Format] = {
    "lama-facts": _Format(readers.read_jsonl, parsers.lama_fact),
    "relation-templates": _Format(readers.read_jsonl, parsers.relation_template),
    "trex-evidence": _Format(readers.read_jsonl, parsers.trex_evidence),
    "google-re": _Format(readers.read_jsonl, parsers.google_re),
    "squad-cloze": _Format(readers.read_jsonl, parsers.squad_cloze),
    "conceptnet": _Format(readers.read_jsonl, parsers.conceptnet),
    "multiple-choice": _Format(readers.read_jsonl, parsers.multiple_choice),
    "winogrande": _Format(readers.read_jsonl, parsers.winogrande),
    "lambada": _Format(readers.read_jsonl, parsers.lambada),
    "hellaswag": _Format(readers.read_line_blocks, parsers.hellaswag),
    "sciq": _Format(_read_sciq, parsers.sciq),
    "triviaqa": _Format(readers.read_jsonl, parsers.triviaqa),
    "webquestions": _Format(readers.read_json_list, parsers.webquestion),
}


@dataclass(frozen=True)
class SkippedLine:
    """A malformed item that a `skip_malformed` stream passed over."""

    path: Path
    line: int
    reason: str


class RecordStream(Generic[R]):
    """The records of one dataset, read lazily from its files on each iteration.

    Each iteration starts over and resets `skipped`; after a full pass, `rows` is the number of
    records yielded and `skipped` lists the malformed items passed over (only non-empty with
    `skip_malformed=True`; otherwise the first malformed item raises `DataError`).
    """

    def __init__(self, dataset: Dataset, files: Sequence[Path], *, skip_malformed: bool = False,
                 memo: bool = False):  # fmt: skip
        self.dataset = dataset
        self.files = tuple(files)
        self.skip_malformed = skip_malformed
        self.memo = memo  # remember whole files' records (see the module doc)
        self.rows = 0
        self.skipped: list[SkippedLine] = []
        self._format = FORMATS[dataset.format]

    def __iter__(self) -> Iterator[R]:
        self.rows = 0
        self.skipped = []
        for path in self.files:
            yield from self._read(path)

    def _read(self, path: Path) -> Iterator[R]:
        key = _PARSED.key(path, self.dataset.name, self.skip_malformed) if self.memo else None
        known = _PARSED.get(key) if key is not None else None
        if known is not None:
            records, skipped = known
            self.skipped.extend(skipped)
            for record in records:
                self.rows += 1
                yield record
            return
        parsed: list[R] = []
        skipped_before = len(self.skipped)
        try:
            for line, raw in self._format.read(path):
                try:
                    if isinstance(raw, Malformed):
                        raise raw
                    record = self._format.parse(raw, path)
                except Malformed as err:
                    self._malformed(path, line, err.reason)
                    continue
                self.rows += 1
                if key is not None:
                    parsed.append(record)
                yield record
        except (OSError, EOFError) as err:
            raise DataError(
                f"cannot read {path} of dataset {self.dataset.name!r} ({err}); fix: {IMPORT_FIX}"
            ) from None
        if key is not None:  # read to the end: remember it
            _PARSED.put(key, parsed, self.skipped[skipped_before:])

    def _malformed(self, path: Path, line: int, reason: str) -> None:
        if not self.skip_malformed:
            raise DataError(
                f"{path}, line {line}: malformed {self.dataset.name} record ({reason}); fix: "
                "restore the file with `knowcomp data import PATH`, or pass "
                "skip_malformed=True to skip such lines"
            )
        self.skipped.append(SkippedLine(path, line, reason))

    def count(self) -> int:
        """Read the whole stream and return how many records it yields."""
        for _ in self:
            pass
        return self.rows

    def __repr__(self) -> str:
        return f"RecordStream({self.dataset.name!r}, {len(self.files)} file(s))"


def dataset_files(
    name: str, data_dir: Path | str | None = None, *, parts: Iterable[str] | None = None
) -> list[Path]:
    """The files of dataset `name` in the data directory, all checked to exist.

    `parts` picks some of a multi-file dataset's files by relation (`P19`, `place_of_birth`).
    """
    dataset = get_dataset(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    files = [root / rel for rel in dataset.files]
    if parts is not None:
        by_part = {parsers.relation_of(path): path for path in files}
        wanted = list(parts)
        unknown = [part for part in wanted if part not in by_part]
        if unknown:
            raise DataError(
                f"dataset {name!r} has no relation {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(by_part)}"
            )
        files = [by_part[part] for part in wanted]
    missing = [path for path in files if not path.is_file()]
    if missing:
        where = "" if root.is_dir() else f" (the data directory {root} does not exist)"
        some = f"{len(missing)} of its {len(files)} files are" if len(files) > 1 else "it is"
        raise DataError(
            f"dataset {name!r} is missing: {some} not in the data directory{where}; looked at "
            f"{missing[0]}; fix: {IMPORT_FIX}"
        )
    return files


def load(
    name: str,
    data_dir: Path | str | None = None,
    *,
    skip_malformed: bool = False,
    parts: Iterable[str] | None = None,
) -> RecordStream[Any]:
    """The records of any catalog dataset, typed by its format (see the `load_*` functions)."""
    files = dataset_files(name, data_dir, parts=parts)
    return RecordStream(get_dataset(name), files, skip_malformed=skip_malformed, memo=True)


def _load_format(
    name: str, fmt: str, data_dir: Path | str | None, skip_malformed: bool, parts: Any = None
) -> RecordStream[Any]:
    dataset = get_dataset(name)
    if dataset.format != fmt:
        raise DataError(
            f"dataset {name!r} is in the {dataset.format!r} format, not {fmt!r}; fix: use "
            f"knowcomp.data.load({name!r})"
        )
    return load(name, data_dir, skip_malformed=skip_malformed, parts=parts)


def load_lama_facts(
    data_dir: Path | str | None = None,
    *,
    relations: Iterable[str] | None = None,
    skip_malformed: bool = False,
) -> RecordStream[LamaFact]:
    """LAMA T-REx facts (`lama-trex`), optionally only some relations (`["P19", "P20"]`)."""
    return _load_format("lama-trex", "lama-facts", data_dir, skip_malformed, relations)


def load_relation_templates(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[RelationTemplate]:
    """The LAMA relation templates (`lama-relations`)."""
    return _load_format("lama-relations", "relation-templates", data_dir, skip_malformed)


def load_trex_evidence(
    data_dir: Path | str | None = None,
    *,
    relations: Iterable[str] | None = None,
    skip_malformed: bool = False,
) -> RecordStream[TrexEvidence]:
    """LAMA T-REx facts with their evidence sentences (`lama-trex-evidence`, 28 relations)."""
    return _load_format("lama-trex-evidence", "trex-evidence", data_dir, skip_malformed, relations)


def load_google_re(
    data_dir: Path | str | None = None,
    *,
    relations: Iterable[str] | None = None,
    skip_malformed: bool = False,
) -> RecordStream[GoogleReFact]:
    """LAMA Google-RE facts (`lama-google-re`); relations are `place_of_birth`,
    `date_of_birth` and `place_of_death`."""
    return _load_format("lama-google-re", "google-re", data_dir, skip_malformed, relations)


def load_squad_cloze(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[SquadCloze]:
    """LAMA SQuAD cloze statements (`lama-squad`)."""
    return _load_format("lama-squad", "squad-cloze", data_dir, skip_malformed)


def load_conceptnet_subset(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[ConceptNetFact]:
    """The 146-fact LAMA ConceptNet subset (`lama-conceptnet-subset`; not the full probe)."""
    return _load_format("lama-conceptnet-subset", "conceptnet", data_dir, skip_malformed)


def load_multiple_choice(
    name: str, data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[MultipleChoiceItem]:
    """A pre-formatted multiple-choice set: `boolq`, `piqa`, `arc-easy` or `arc-challenge`."""
    return _load_format(name, "multiple-choice", data_dir, skip_malformed)


def load_winogrande(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[WinograndeItem]:
    """WinoGrande dev in partial-scoring form (`winogrande`)."""
    return _load_format("winogrande", "winogrande", data_dir, skip_malformed)


def load_lambada(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[LambadaItem]:
    """LAMBADA, OpenAI version (`lambada`)."""
    return _load_format("lambada", "lambada", data_dir, skip_malformed)


def load_hellaswag(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[HellaSwagItem]:
    """HellaSwag validation (`hellaswag`), from its bz2 text of six lines an item."""
    return _load_format("hellaswag", "hellaswag", data_dir, skip_malformed)


def load_sciq(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[SciQItem]:
    """SciQ test with SciQ's own distractors (`sciq`); the file's sys_distractor columns are
    a later project's generated distractors and are ignored."""
    return _load_format("sciq", "sciq", data_dir, skip_malformed)


def load_triviaqa(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[TriviaQAItem]:
    """The 3,000-question TriviaQA subset (`triviaqa`)."""
    return _load_format("triviaqa", "triviaqa", data_dir, skip_malformed)


def load_webquestions(
    data_dir: Path | str | None = None, *, skip_malformed: bool = False
) -> RecordStream[WebQuestion]:
    """WebQuestions test (`webqs`)."""
    return _load_format("webqs", "webquestions", data_dir, skip_malformed)
