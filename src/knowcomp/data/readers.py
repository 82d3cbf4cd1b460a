"""Low-level readers, one per container format of the mirror: JSON lines, a JSON list, CSV, and
HellaSwag's bz2 text with six lines an item.

Each reader streams a file and yields `(line, value)` pairs, where `line` is the 1-based line on
which the item starts and `value` is either the raw item or a `Malformed` marker. Yielding the
marker instead of raising lets the caller decide between failing and skipping while the reader
keeps its place in the file. Problems with the file as a whole (unreadable, wrong CSV header)
raise `DataError` at once, since no line can be skipped to recover from them.
"""

from __future__ import annotations

import bz2
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from knowcomp.errors import DataError, KnowcompError

HELLASWAG_LINES_PER_ITEM = 6


class Malformed(Exception):
    """An item that cannot be read; `reason` says what is wrong with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Item = tuple[int, Any]


def _decode(raw: bytes) -> str | Malformed:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Malformed(f"not valid UTF-8 ({err.reason} at byte {err.start})")


def read_text(path: Path, what: str, error: type[KnowcompError] = KnowcompError) -> str:
    """The whole of a UTF-8 text file, or one-line `error` naming `what` the file is and the fix.

    The one reader of user text files (study specs, recipe files, task and cloze files,
    calibration text): Python's own `read_text` raises a bare `UnicodeDecodeError` or `OSError`.
    """
    if path.is_dir():
        raise error(f"{what} '{path}' is a folder, not a file; give the path of the file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} '{path}' does not exist; check the path") from None
    except OSError as err:
        problem = f"cannot read {what} '{path}' ({err.strerror}); check its permissions"
        raise error(problem) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise error(
            f"{what} '{path}' is not UTF-8 text (invalid byte at line {line}); save it as UTF-8"
        ) from None


def file_paragraphs(path: Path, what: str = "calibration file") -> list[str]:
    """The paragraphs of a UTF-8 text file (split at blank lines, whitespace collapsed);
    `what` names the file in errors."""
    text = read_text(path, what, DataError)
    return [" ".join(part.split()) for part in text.split("\n\n")]


def load_yaml(text: str, source: str, error: type[KnowcompError] = KnowcompError) -> Any:
    """Parse YAML that a user wrote (a study spec, a recipe, a task file) strictly.

    PyYAML keeps the last of two equal keys without a word, so a spec with `limit:` twice runs
    with one of them; here that is an error naming both lines. Syntax errors name their line."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, list | dict):
                raise error(f"{source}, line {line}: a mapping key must be a plain value")
            if key in seen:
                raise error(
                    f"{source}, line {line}: key '{key}' is given twice (first on line "
                    f"{seen[key]}); keep one"
                )
            seen[key] = line
        return loader.construct_mapping(node, deep=True)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        fix = "fix: correct the YAML syntax there"
        raise error(f"{source}{where}: not valid YAML ({problem}); {fix}") from None
    except RecursionError:
        raise error(f"{source}: YAML nested too deeply; write a flatter file") from None


def _json_object(text: str) -> dict[str, Any] | Malformed:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return Malformed(f"invalid JSON: {err.msg} at column {err.colno}")
    if not isinstance(value, dict):
        return Malformed(f"expected a JSON object, found {type(value).__name__}")
    return value


def read_jsonl(path: Path) -> Iterator[Item]:
    """One JSON object a line; blank lines are not items and are passed over."""
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            text = _decode(raw)
            if isinstance(text, Malformed):
                yield line, text
            elif text.strip():
                yield line, _json_object(text)


def read_json_list(path: Path) -> Iterator[Item]:
    """A JSON list of objects.

    The mirror writes one object a line between `[` and `]` lines; that layout is streamed line by
    line, so a bad object can be skipped. Any other layout is parsed as one document, where a
    syntax error cannot be skipped and raises `DataError`.
    """
    with path.open("rb") as handle:
        first = b""
        for raw in handle:
            if raw.strip():
                first = raw.strip()
                break
    if first == b"[":
        yield from _read_json_list_by_line(path)
    else:
        yield from _read_json_document(path)


def _read_json_list_by_line(path: Path) -> Iterator[Item]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            text = _decode(raw)
            if isinstance(text, Malformed):
                yield line, text
                continue
            item = text.strip()
            if item in ("", "[", "]", "],"):
                continue
            item = item.removesuffix(",").rstrip()
            if item.endswith("]") and item[:-1].rstrip().endswith("}"):
                item = item[:-1].rstrip()
            yield line, _json_object(item)


def _read_json_document(path: Path) -> Iterator[Item]:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f", line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise DataError(
            f"{path}{where}: not a readable JSON list ({err}); fix: restore the file with "
            "`knowcomp data import PATH`"
        ) from None
    if not isinstance(value, list):
        raise DataError(
            f"{path}: expected a JSON list, found {type(value).__name__}; fix: restore the file "
            "with `knowcomp data import PATH`"
        )
    for index, item in enumerate(value, 1):
        # No line numbers in a one-document layout: report the item's position instead.
        if isinstance(item, dict):
            yield index, item
        else:
            yield index, Malformed(f"item {index} is {type(item).__name__}, not an object")


def read_csv(path: Path, required: tuple[str, ...]) -> Iterator[Item]:
    """CSV with a header row; yields each row as a dict from column name to text.

    Quoted fields may span lines; an item's line is the line its row starts on. A header that
    lacks a `required` column raises `DataError`.
    """
    bad_lines: set[int] = set()
    lines_read = 0

    def decoded(handle: Any) -> Iterator[str]:
        nonlocal lines_read
        for raw in handle:
            lines_read += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.add(lines_read)
                yield raw.decode("utf-8", errors="replace")

    with path.open("rb") as handle:
        reader = csv.reader(decoded(handle))
        header = next(reader, None)
        missing = [name for name in required if header is None or name not in header]
        if header is None or missing:
            raise DataError(
                f"{path}: the CSV header lacks column(s) {', '.join(missing)}; fix: restore the "
                "file with `knowcomp data import PATH`"
            )
        while True:
            start = lines_read + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield start, Malformed(f"invalid CSV: {err}")
                if lines_read < start:
                    return
                continue
            if bad_lines.intersection(range(start, lines_read + 1)):
                yield start, Malformed("not valid UTF-8")
            elif not any(field.strip() for field in row):
                continue
            elif len(row) != len(header):
                yield start, Malformed(f"expected {len(header)} fields, found {len(row)}")
            else:
                yield start, dict(zip(header, row, strict=True))


def read_line_blocks(path: Path, size: int = HELLASWAG_LINES_PER_ITEM) -> Iterator[Item]:
    """A bz2-compressed text of fixed-size blocks of lines; yields each block as a tuple.

    Line ends are removed and nothing else. Blank lines after the last block are ignored; any
    other leftover is an incomplete, malformed item.
    """
    block: list[str] = []
    problem: Malformed | None = None
    start = 1
    with bz2.open(path, "rb") as handle:
        for line, raw in enumerate(handle, 1):
            if not block:
                start = line
            text = _decode(raw)
            if isinstance(text, Malformed):
                problem = problem or Malformed(f"line {line}: {text.reason}")
                text = ""
            block.append(text.rstrip("\n").rstrip("\r"))
            if len(block) == size:
                yield start, problem or tuple(block)
                block, problem = [], None
    if problem or any(text.strip() for text in block):
        yield start, problem or Malformed(f"incomplete item: {len(block)} of {size} lines")
