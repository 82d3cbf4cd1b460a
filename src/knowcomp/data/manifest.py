"""The mirror's checksum manifest, `SHA256SUMS`, in the format `sha256sum` writes and checks:
one `<64 hex digits><space><space or *><relative path>` line per file (`./lama/relations.jsonl`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

from knowcomp.errors import DataError

MANIFEST = "SHA256SUMS"
PROVENANCE = "PROVENANCE.md"

_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")
_CHUNK = 1 << 20


def read_manifest(root: Path) -> dict[str, str]:
    """Map each file `SHA256SUMS` lists (relative POSIX path, no `./`) to its lower-case digest.

    Paths that leave the folder (absolute, or with `..`) are refused: a manifest names files of
    the mirror, nothing else.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{root} has no {MANIFEST}, so its files cannot be verified; fix: pass the mirror's "
            f"top folder (the one holding {MANIFEST} and {PROVENANCE}, e.g. ../shared/data)"
        )
    entries: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                continue
            match = _LINE.match(text)
            rel = PurePosixPath(match["path"]) if match else None
            if match is None or rel is None or rel.is_absolute() or ".." in rel.parts:
                raise DataError(
                    f"{path}, line {number}: not a `sha256sum` line ({text[:60]!r}); fix: "
                    f"restore {MANIFEST} from the mirror's source"
                )
            entries[rel.as_posix()] = match["digest"].lower()
    if not entries:
        raise DataError(f"{path} lists no files; fix: restore {MANIFEST} from the mirror's source")
    return entries


def sha256_file(path: Path) -> str:
    """The hex SHA-256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
