"""Bring the evaluation data mirror into the data directory, verified, and report what is there.

`import_mirror` copies (or links) every file that the mirror's `SHA256SUMS` lists, checking each
checksum, then counts every dataset's rows against the catalog. It is idempotent: a file whose
checksum already matches is left alone, a damaged one is replaced. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from knowcomp.data.catalog import datasets, get_dataset
from knowcomp.data.loaders import RecordStream
from knowcomp.data.manifest import MANIFEST, PROVENANCE, read_manifest, sha256_file
from knowcomp.errors import DataError
from knowcomp.paths import data_dir as default_data_dir

# Called as progress(stage, done, total, item); stage is "files" or "datasets".
ProgressCallback = Callable[[str, int, int, str], None]

OK, MISSING, INCOMPLETE, MALFORMED, ROWS_DIFFER = (
    "ok",
    "missing",
    "incomplete",
    "malformed",
    "rows differ",
)


@dataclass(frozen=True)
class DatasetStatus:
    """What the data directory holds of one dataset.

    `rows_found` counts the records the loader yields from the files present (None if none is);
    `malformed` counts the items it had to skip.
    """

    name: str
    category: str
    location: str
    root: Path
    files_expected: int
    files_found: int
    rows_expected: int
    rows_found: int | None
    malformed: int = 0

    @property
    def present(self) -> bool:
        """Every file of the dataset is in the data directory."""
        return self.files_found == self.files_expected

    @property
    def state(self) -> str:
        """`ok`, `missing`, `incomplete` (some files absent), `malformed` or `rows differ`."""
        if self.files_found == 0:
            return MISSING
        if not self.present:
            return INCOMPLETE
        if self.malformed:
            return MALFORMED
        if self.rows_found != self.rows_expected:
            return ROWS_DIFFER
        return OK

    @property
    def ok(self) -> bool:
        return self.state == OK


@dataclass(frozen=True)
class FileResult:
    """What the import did with one file: copied, linked, replaced (was damaged), skipped
    (already verified) or verified (importing a folder onto itself)."""

    path: str
    action: str


@dataclass(frozen=True)
class ImportReport:
    """The outcome of `import_mirror`: one result per manifest file, one status per dataset."""

    source: Path
    dest: Path
    link: bool
    files: tuple[FileResult, ...]
    datasets: tuple[DatasetStatus, ...]

    def count(self, action: str) -> int:
        """How many files the import handled with `action` (e.g. "copied", "skipped")."""
        return sum(1 for result in self.files if result.action == action)

    @property
    def problems(self) -> tuple[DatasetStatus, ...]:
        """Datasets present in part or with the wrong rows; a dataset absent from the mirror
        altogether is not a problem of the import."""
        return tuple(s for s in self.datasets if s.state not in (OK, MISSING))

    @property
    def ok(self) -> bool:
        return not self.problems


class ImportVerificationError(DataError):
    """Files were imported and their checksums match, but some dataset failed its row count."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


def check_dataset(name: str, data_dir: Path | str | None = None) -> DatasetStatus:
    """Whether dataset `name` is in the data directory, and how many rows its loader reads."""
    dataset = get_dataset(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    present = [root / rel for rel in dataset.files if (root / rel).is_file()]
    rows: int | None = None
    malformed = 0
    if present:
        stream: RecordStream[object] = RecordStream(dataset, present, skip_malformed=True)
        rows = stream.count()
        malformed = len(stream.skipped)
    return DatasetStatus(
        dataset.name,
        dataset.category,
        dataset.location,
        root,
        len(dataset.files),
        len(present),
        dataset.rows,
        rows,
        malformed,
    )


def check_all(
    data_dir: Path | str | None = None, *, progress: ProgressCallback | None = None
) -> list[DatasetStatus]:
    """`check_dataset` for every dataset of the catalog, in catalog order."""
    everything = datasets()
    statuses = []
    for done, dataset in enumerate(everything):
        if progress:
            progress("datasets", done, len(everything), dataset.name)
        statuses.append(check_dataset(dataset.name, data_dir))
    if progress:
        progress("datasets", len(everything), len(everything), "")
    return statuses


def verify_checksums(data_dir: Path | str | None = None) -> int:
    """Check every file the data directory's `SHA256SUMS` lists; return how many were checked.

    Raises `DataError` naming the first file that is absent or damaged.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    manifest = read_manifest(root)
    for rel, digest in manifest.items():
        path = root / rel
        if not path.is_file():
            raise DataError(f"{path} is missing; fix: run `knowcomp data import PATH` again")
        actual = sha256_file(path)
        if actual != digest:
            raise DataError(
                f"checksum mismatch for {rel}: {path} has sha256 {actual[:16]}..., {MANIFEST} "
                f"expects {digest[:16]}...; fix: run `knowcomp data import PATH` again to "
                "replace the damaged file"
            )
    return len(manifest)


def import_mirror(
    src: Path | str,
    dest: Path | str | None = None,
    *,
    link: bool = False,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Copy (or, with `link=True`, symlink) the mirror at `src` into `dest` (default: the data
    directory) and verify it: every checksum in `SHA256SUMS`, then every dataset's row count.

    Raises `DataError` when `src` is not a mirror, a listed file is absent or fails its checksum
    (nothing damaged is written), or `dest` cannot be written; `ImportVerificationError` (a
    `DataError` carrying the report) when a dataset's rows disagree with the catalog.
    """
    source = Path(src).expanduser()
    if not source.is_dir():
        raise DataError(
            f"mirror folder {source} does not exist or is not a folder; fix: pass the folder "
            f"that holds {MANIFEST} and {PROVENANCE}, e.g. `knowcomp data import ../shared/data`"
        )
    manifest = read_manifest(source)
    target = Path(dest).expanduser() if dest is not None else default_data_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the data directory {target} ({err}); {_DEST_FIX}") from None
    in_place = target.resolve() == source.resolve()

    results = []
    for done, (rel, digest) in enumerate(manifest.items()):
        if progress:
            progress("files", done, len(manifest), rel)
        installer = _verify_in_place if in_place else _install
        action = installer(source, target, rel, digest, link)
        results.append(FileResult(rel, action))
    if progress:
        progress("files", len(manifest), len(manifest), "")
    if not in_place:
        for name in (PROVENANCE, MANIFEST):  # the manifest last: it marks a finished import
            if (source / name).is_file():
                _copy_small(source / name, target / name)

    report = ImportReport(
        source, target, link, tuple(results), tuple(check_all(target, progress=progress))
    )
    if report.problems:
        summary = "; ".join(_describe(status) for status in report.problems)
        raise ImportVerificationError(
            f"imported into {target}, but {len(report.problems)} dataset(s) did not verify: "
            f"{summary}; fix: compare the mirror with PROVENANCE.md and re-fetch it",
            report,
        )
    return report


_DEST_FIX = "fix: set KNOWCOMP_DATA (or pass --dest) to a folder you can write"


def _describe(status: DatasetStatus) -> str:
    if status.state == INCOMPLETE:
        return f"{status.name} has {status.files_found} of {status.files_expected} files"
    if status.state == MALFORMED:
        return f"{status.name} has {status.malformed} malformed item(s)"
    return f"{status.name} has {status.rows_found} rows, {status.rows_expected} expected"


def _mismatch(rel: str, path: Path, actual: str, digest: str, source: Path) -> DataError:
    return DataError(
        f"checksum mismatch for {rel}: {path} has sha256 {actual[:16]}..., {MANIFEST} expects "
        f"{digest[:16]}...; the mirror's copy is damaged or was changed; fix: restore {rel} from "
        f"its source repository (see {PROVENANCE}) and run `knowcomp data import {source}` again"
    )


def _source_file(source: Path, rel: str) -> Path:
    path = source / rel
    if not path.is_file():
        raise DataError(
            f"{rel} is listed in {source / MANIFEST} but missing from the mirror ({path}); fix: "
            f"restore it from its source repository (see {PROVENANCE}) or re-fetch the mirror"
        )
    return path


def _verify_in_place(source: Path, target: Path, rel: str, digest: str, link: bool) -> str:
    path = _source_file(source, rel)
    actual = sha256_file(path)
    if actual != digest:
        raise _mismatch(rel, path, actual, digest, source)
    return "verified"


def _install(source: Path, target: Path, rel: str, digest: str, link: bool) -> str:
    origin = _source_file(source, rel)
    dest = target / rel
    existed = dest.is_file()
    if existed and (link or not dest.is_symlink()) and sha256_file(dest) == digest:
        return "skipped"
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if link:
            actual = sha256_file(origin)
            if actual != digest:
                raise _mismatch(rel, origin, actual, digest, source)
            temp.unlink(missing_ok=True)
            temp.symlink_to(origin.resolve())
        else:
            actual = _copy_hashing(origin, temp)
            if actual != digest:
                raise _mismatch(rel, origin, actual, digest, source)
        os.replace(temp, dest)
    except OSError as err:
        raise DataError(f"cannot write {dest} ({err}); {_DEST_FIX}") from None
    finally:
        if temp.is_symlink() or temp.exists():
            temp.unlink()
    if existed:
        return "replaced"
    return "linked" if link else "copied"


def _copy_hashing(origin: Path, temp: Path) -> str:
    """Copy `origin` to `temp` (a fresh, writable file) and return the digest of what was read."""
    digest = hashlib.sha256()
    with origin.open("rb") as reader, temp.open("wb") as writer:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def _copy_small(origin: Path, dest: Path) -> None:
    try:
        if dest.is_file() and not dest.is_symlink() and dest.read_bytes() == origin.read_bytes():
            return
        dest.unlink(missing_ok=True)
        shutil.copyfile(origin, dest)
    except OSError as err:
        raise DataError(f"cannot write {dest} ({err}); {_DEST_FIX}") from None
