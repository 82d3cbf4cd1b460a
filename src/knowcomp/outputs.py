"""Output files: checked before any work, written whole, with the modes the user's umask gives.

Every command that writes a file the user named (`eval --out`, `results --out`) checks the path
first, so a long evaluation never ends in `IsADirectoryError` or `PermissionError`, and a file
knowcomp did not write is replaced only with `--force`. Writes go through a temporary file in
the same folder and `os.replace`, so a crash leaves the old file or the new one. Python's
`tempfile` (and the libraries built on it: safetensors, `tempfile.mkdtemp`) create files 0600
and folders 0700; `umask_mode` and `apply_umask` give them the modes an ordinary `open` would.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from knowcomp.errors import KnowcompError


class OutputError(KnowcompError):
    """An output path that is a folder, cannot be written, or holds a file knowcomp did not
    write."""


def current_umask() -> int:
    """The process umask (read by setting it and setting it back: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(folder: bool = False) -> int:
    """The mode `open()` (0666) or `mkdir()` (0777) gives a new file or folder here."""
    return (0o777 if folder else 0o666) & ~current_umask()


def apply_umask(path: Path, *, recursive: bool = True) -> None:
    """Give `path`, and everything under it if it is a folder (and `recursive`), the modes of
    the user's umask (for files and folders written by libraries that make them 0600 / 0700)."""
    file_mode, folder_mode = umask_mode(), umask_mode(folder=True)
    paths = [path, *path.rglob("*")] if path.is_dir() and recursive else [path]
    for item in paths:
        if not item.is_symlink():
            item.chmod(folder_mode if item.is_dir() else file_mode)


def check_output_file(
    path: Path,
    *,
    option: str = "--out",
    force: bool = False,
    ours: Callable[[Path], bool] | None = None,
) -> None:
    """Fail now, with one line, unless `path` can be written as a file: not a folder, its folder
    exists or can be created, and writable. An existing file is replaced only if `ours(path)`
    says knowcomp wrote it, or with `force` (`ours=None`: any file may be replaced)."""
    if path.is_dir():
        raise OutputError(f"{option} '{path}' is a folder; give a file path, e.g. {path}/out.json")
    folder = _existing_ancestor(path.parent)
    if not folder.is_dir():
        raise OutputError(f"{option} '{path}': '{folder}' is a file, not a folder; "
                          "choose another path")  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option} '{path}': folder '{folder}' is not writable; "
                          "choose another path")  # fmt: skip
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputError(f"{option} '{path}' is not writable; choose another path")
        if ours is not None and not force and not ours(path):
            raise OutputError(
                f"{option} '{path}' exists and was not written by knowcomp; choose another "
                "path, or add --force to replace it"
            )


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def write_atomically(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file and `os.replace`: a crash or
    Ctrl-C leaves the old file or the new one, never half of one. A new file gets the umask's
    mode, a replaced one keeps its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.is_file() else umask_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
