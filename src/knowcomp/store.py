"""The results store: one SQLite file (WAL), one transaction per trial.

Tables: `trials` (one row per model x recipe x seed x evaluation options, with what the
compression achieved), `results` (one row per trial x probe: metrics, counts, time) and
`records` (the per-item records of each result, compressed, for per-fact analysis) and
`similarity` (per compressed trial and layer, the cosine similarity of attention maps and hidden
states to the uncompressed model, when the study asks for it). A trial with a recover step has
the recovery method, its trainable parameters and its training log in `trials.recovery` (JSON;
NULL otherwise), a column added in place to files written before it existed; likewise its LAMA
protocol (`trials.lama_protocol`; NULL in older files means `templates`). A result of adaptive
evaluation (`knowcomp.pipeline.adaptive`) has how far it got in `results.sequential` (JSON: items,
stopping reason, final interval; NULL for a result that scored every item, and in older files);
such a result, unlike any other, is replaced when a later run extends it.

A trial's rows are written together in one `BEGIN IMMEDIATE` transaction, so `kill -9` loses
at most the trial in flight. Keys are primary keys and every insert is `OR IGNORE`, so two runs
writing the same file never duplicate a row; WAL lets readers work while a study writes.
A file is identified (`identify_results_file`) before anything about it changes, and reading
commands open it read-only (`ResultsStore(path, readonly=True)`), so another program's
database, an empty file or a results file being read is never modified.

Two runs on one file also share the work: a runner `claim`s a trial before computing it and
leaves trials claimed by another live process to that process. A claim whose process is gone
(same host, pid not running) or that is older than `STALE_CLAIM_SECONDS` is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowcomp.errors import KnowcompError

SCHEMA_VERSION = 1
STALE_CLAIM_SECONDS = 12 * 3600
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_key TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    family TEXT,
    sweep TEXT NOT NULL,
    recipe TEXT,
    level REAL,
    seed INTEGER NOT NULL,
    limit_items INTEGER,
    lama_mode TEXT NOT NULL,
    dtype TEXT NOT NULL,
    sparsity REAL,
    params_compressed INTEGER,
    params_linear INTEGER,
    params_model INTEGER,
    bytes_before INTEGER,
    bytes_after INTEGER,
    compression TEXT,
    versions TEXT,
    seconds REAL,
    created REAL NOT NULL,
    recovery TEXT,
    lama_protocol TEXT
);
CREATE TABLE IF NOT EXISTS results (
    trial_key TEXT NOT NULL REFERENCES trials(trial_key),
    probe TEXT NOT NULL,
    category TEXT,
    metrics TEXT NOT NULL,
    counts TEXT NOT NULL,
    notes TEXT,
    seconds REAL,
    created REAL NOT NULL,
    sequential TEXT,
    PRIMARY KEY (trial_key, probe)
);
CREATE TABLE IF NOT EXISTS claims (
    trial_key TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    token TEXT NOT NULL,
    claimed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    trial_key TEXT NOT NULL,
    probe TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (trial_key, probe)
);
CREATE TABLE IF NOT EXISTS similarity (
    trial_key TEXT NOT NULL,
    layer INTEGER NOT NULL,
    attention_cosine REAL,
    hidden_cosine REAL NOT NULL,
    texts INTEGER NOT NULL,
    PRIMARY KEY (trial_key, layer)
);
"""
TRIAL_COLUMNS = (
    "trial_key", "study", "spec_hash", "model", "family", "sweep", "recipe", "level", "seed",
    "limit_items", "lama_mode", "dtype", "sparsity", "params_compressed", "params_linear",
    "params_model", "bytes_before", "bytes_after", "compression", "versions", "seconds",
    "recovery", "lama_protocol",
)  # fmt: skip
JSON_COLUMNS = ("compression", "versions", "recovery")


class StoreError(KnowcompError):
    """A results file that cannot be opened, written, or was written by another version."""


@dataclass
class TrialOutcome:
    """Everything one trial produced: the trial row's values and one result per probe."""

    trial: dict[str, Any]  # TRIAL_COLUMNS values (the JSON_COLUMNS as dicts)
    results: list[dict[str, Any]] = field(default_factory=list)  # ProbeResult.to_dict()s
    similarity: list[dict[str, Any]] = field(default_factory=list)  # SimilarityResult.rows()
    # adaptive evaluation: results of other trials (their baselines) extended on the way
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class Owner:
    """Who is computing a trial: this process (host, pid, and a token against pid reuse)."""

    host: str
    pid: int
    token: str

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultsStore:
    """Open (or create) a results file; check its version before anything is written."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        """`readonly`: for commands that only read (`results`, `report`): the file must exist,
        and nothing about it changes (no schema, no WAL switch, no `-wal`/`-shm` left)."""
        self.path = Path(path)
        if readonly:
            identify_results_file(self.path, must_exist=True)
            self._db = connect_readonly(self.path)
            self._db.row_factory = sqlite3.Row
            return
        _check_writable(self.path)
        identify_results_file(self.path, must_exist=False)  # before anything is changed
        try:
            if not self.path.exists():
                _create_results_file(self.path)
            self._db = _connect(self.path)
            _init_schema(self._db, self.path)  # an older knowcomp's file gains newer columns
        except sqlite3.DatabaseError as err:
            raise StoreError(
                f"'{self.path}' is not a knowcomp results file ({err}); choose another --out path"
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------
    def write(self, outcome: TrialOutcome) -> int:
        """Write a trial and its results in one transaction; returns the result rows added."""
        trial = dict(outcome.trial)
        for key in JSON_COLUMNS:
            if trial.get(key) is not None and not isinstance(trial[key], str):
                trial[key] = json.dumps(trial[key])
        now = time.time()
        added = 0
        with _transaction(self._db):
            self._db.execute(
                f"INSERT OR IGNORE INTO trials ({', '.join(TRIAL_COLUMNS)}, created) "
                f"VALUES ({', '.join('?' * len(TRIAL_COLUMNS))}, ?)",
                [trial.get(c) for c in TRIAL_COLUMNS] + [now],
            )
            for result in outcome.results:
                added += self._write_result(trial["trial_key"], result, now)
            for trial_key, result in outcome.updates:
                self._write_result(trial_key, result, now)
            for row in outcome.similarity:
                self._db.execute(
                    "INSERT OR IGNORE INTO similarity VALUES (?, ?, ?, ?, ?)",
                    (trial["trial_key"], row["layer"], row["attention_cosine"],
                     row["hidden_cosine"], row["texts"]),
                )  # fmt: skip
            self._db.execute("DELETE FROM claims WHERE trial_key = ?", (trial["trial_key"],))
        return added

    def _write_result(self, trial_key: str, result: dict[str, Any], now: float) -> int:
        """Insert one result and its records (1 if added); an adaptive result, or a result over
        a stored adaptive one, replaces the stored one (it extends it), unless the stored one
        covers more items (a Ray actor, or another run, extended the same baseline further)."""
        sequential = result.get("sequential")
        verb = "INSERT OR IGNORE"
        row = self._db.execute(
            "SELECT sequential FROM results WHERE trial_key = ? AND probe = ?",
            (trial_key, result["probe"]),
        ).fetchone()
        if sequential is not None and row is not None:
            stored_share = json.loads(row[0])["share"] if row[0] else 1.0  # NULL: every item
            if stored_share > sequential["share"]:
                return 0
        if sequential is not None or (row is not None and row[0]):
            verb = "INSERT OR REPLACE"
            self._db.execute("DELETE FROM records WHERE trial_key = ? AND probe = ?",
                             (trial_key, result["probe"]))  # fmt: skip
        cursor = self._db.execute(
            f"{verb} INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                trial_key, result["probe"], result.get("category"),
                json.dumps(result["metrics"]), json.dumps(result["counts"]),
                json.dumps(result.get("notes", [])), result.get("seconds"), now,
                json.dumps(sequential) if sequential is not None else None,
            ),
        )  # fmt: skip
        if cursor.rowcount and result.get("records"):
            self._db.execute(
                f"{verb} INTO records VALUES (?, ?, ?)",
                (trial_key, result["probe"], _pack(result["records"])),
            )
        return cursor.rowcount

    def claim(self, trial_key: str, owner: Owner) -> Owner | None:
        """Claim a trial for `owner`; returns the other live owner if someone else holds it."""
        with _transaction(self._db):
            row = self._db.execute(
                "SELECT host, pid, token, claimed FROM claims WHERE trial_key = ?", (trial_key,)
            ).fetchone()
            if row is not None:
                holder = Owner(row["host"], row["pid"], row["token"])
                if holder != owner and not self._stale(holder, row["claimed"]):
                    return holder
            self._db.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                (trial_key, owner.host, owner.pid, owner.token, time.time()),
            )
        return None

    @staticmethod
    def _stale(holder: Owner, claimed: float) -> bool:
        if time.time() - claimed > STALE_CLAIM_SECONDS:
            return True
        return holder.host == socket.gethostname() and not process_alive(holder.pid)

    def release(self, owner: Owner) -> None:
        """Drop every claim `owner` still holds (its trials were not finished)."""
        with _transaction(self._db):
            self._db.execute("DELETE FROM claims WHERE token = ?", (owner.token,))

    # -- reading ----------------------------------------------------------------------------
    def has_trial(self, trial_key: str) -> bool:
        """Whether the trial's row is stored (adaptive evaluation may store a baseline's
        results, extended by another trial on Ray, before the baseline trial itself)."""
        row = self._db.execute("SELECT 1 FROM trials WHERE trial_key = ?", (trial_key,))
        return row.fetchone() is not None

    def done_probes(self, trial_key: str) -> set[str]:
        rows = self._db.execute("SELECT probe FROM results WHERE trial_key = ?", (trial_key,))
        return {r[0] for r in rows}

    def _has_sequential(self) -> bool:
        """Whether `results` has the `sequential` column (a file opened read-only from before
        it existed has not)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
        return "sequential" in columns

    def sequential(self, trial_key: str, probe: str) -> dict[str, Any] | None:
        """How far a stored adaptive result got (None: none stored, or it scored every item)."""
        if not self._has_sequential():
            return None
        row = self._db.execute(
            "SELECT sequential FROM results WHERE trial_key = ? AND probe = ?", (trial_key, probe)
        ).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def result(self, trial_key: str, probe: str) -> dict[str, Any] | None:
        """One stored result as a probe returns it (`ProbeResult.to_dict()`), with its records
        and, for an adaptive one, `sequential`; None if not stored."""
        row = self._db.execute(
            "SELECT * FROM results WHERE trial_key = ? AND probe = ?", (trial_key, probe)
        ).fetchone()
        if row is None:
            return None
        row = dict(row)
        out: dict[str, Any] = {"probe": probe, "category": row["category"],
                               "seconds": row["seconds"]}  # fmt: skip
        for key in ("metrics", "counts", "notes", "sequential"):
            out[key] = json.loads(row[key]) if row.get(key) else None
        out["notes"] = out["notes"] or []
        out["records"] = self.records(trial_key, probe)
        return out

    def trials(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM trials ORDER BY created")
        return [_decode_trial(dict(r)) for r in rows]

    def rows(
        self,
        *,
        model: str | None = None,
        probe: str | None = None,
        sweep: str | None = None,
        study: str | None = None,
    ) -> list[dict[str, Any]]:
        """One row per trial x probe, trial fields and result fields together."""
        where, args = [], []
        for column, value in (("t.model", model), ("r.probe", probe), ("t.sweep", sweep),
                              ("t.study", study)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = (
            "SELECT t.*, r.probe, r.category, r.metrics, r.counts, r.notes, "
            + ("r.sequential, " if self._has_sequential() else "NULL AS sequential, ")
            + "r.seconds AS eval_seconds FROM results r JOIN trials t USING (trial_key)"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY t.model, t.sweep, t.level, t.seed, r.probe"
        )
        out = []
        for r in self._db.execute(sql, args):
            row = _decode_trial(dict(r))
            for key in ("metrics", "counts", "notes", "sequential"):
                row[key] = json.loads(row[key]) if row[key] else None
            out.append(row)
        return out

    def similarity(self, *, model: str | None = None) -> list[dict[str, Any]]:
        """One row per compressed (or recovered) trial x layer: the trial's model, sweep,
        recipe, level, seed and recovery method (None without) with the layer's attention and
        hidden cosine to the uncompressed model."""
        sql = (
            "SELECT t.trial_key, t.model, t.sweep, t.recipe, t.level, t.seed, "
            "json_extract(t.recovery, '$.label') AS method, s.layer, "
            "s.attention_cosine, s.hidden_cosine, s.texts FROM similarity s "
            "JOIN trials t USING (trial_key)"
            + (" WHERE t.model = ?" if model is not None else "")
            + " ORDER BY t.model, t.sweep, t.level, t.recipe, t.seed, s.layer"
        )
        return [dict(r) for r in self._db.execute(sql, [model] if model is not None else [])]

    def records(self, trial_key: str, probe: str) -> list[dict[str, Any]]:
        row = self._db.execute(
            "SELECT data FROM records WHERE trial_key = ? AND probe = ?", (trial_key, probe)
        ).fetchone()
        return _unpack(row[0]) if row else []


def _decode_trial(row: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_COLUMNS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def _pack(records: Iterable[dict[str, Any]]) -> bytes:
    return zlib.compress(json.dumps(list(records), separators=(",", ":")).encode(), 6)


def _unpack(blob: bytes) -> list[dict[str, Any]]:
    return json.loads(zlib.decompress(blob))


SQLITE_HEADER = b"SQLite format 3\x00"


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot change `path` or leave files beside it.

    SQLite's `mode=ro` still creates `-wal` and `-shm` beside a WAL-mode file, and keeps them;
    `immutable=1` reads without them. With a `-wal` present (a study writing now, or one
    killed), its pages must be read, so the file is opened `mode=ro` and the log is kept."""
    live_log = path.with_name(path.name + "-wal").exists()
    uri = path.resolve().as_uri() + ("?mode=ro" if live_log else "?mode=ro&immutable=1")
    return sqlite3.connect(uri, uri=True, timeout=120, isolation_level=None)


def identify_results_file(path: Path, *, must_exist: bool) -> None:
    """Fail with one line unless `path` is a knowcomp results file of this schema version (or,
    with `must_exist` false, does not exist yet). Reads only: nothing is written to a file
    before it is known to be knowcomp's."""
    fix = "give a results file written by `knowcomp run`" if must_exist else (
        "choose another --out path")  # fmt: skip
    if path.is_dir():
        raise StoreError(f"results path '{path}' is a folder; {fix}, e.g. {path}/study.sqlite")
    if not path.exists():
        if must_exist:
            raise StoreError(f"results file '{path}' does not exist; run a study first "
                             "(knowcomp run) or check the path")  # fmt: skip
        return
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as err:
        raise StoreError(f"cannot read results file '{path}' ({err.strerror})") from None
    if not header:
        raise StoreError(f"'{path}' is an empty file, not a knowcomp results file; {fix}")
    if header != SQLITE_HEADER:
        raise StoreError(f"'{path}' is not an SQLite file, so not a knowcomp results file; {fix}")
    try:
        db = connect_readonly(path)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            row = None
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        raise StoreError(f"'{path}' is a damaged SQLite file ({err}); {fix}") from None
    if row is None or not {"trials", "results"} <= tables:
        raise StoreError(f"'{path}' is an SQLite file but not a knowcomp results file; {fix}")
    if row[0] != str(SCHEMA_VERSION):
        raise StoreError(
            f"'{path}' was written by a knowcomp with results schema {row[0]}; this knowcomp "
            f"reads schema {SCHEMA_VERSION}; use the knowcomp version that wrote it"
            + ("" if must_exist else ", or write to a new --out file")
        )


def _connect(path: Path) -> sqlite3.Connection:
    """A writing connection: rows by name, WAL, and waits of up to 2 minutes for a lock."""
    db = sqlite3.connect(path, timeout=120, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout = 120000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _init_schema(db: sqlite3.Connection, path: Path) -> None:
    """Write the schema into `db` (the results file `path`), or bring an older knowcomp's
    schema up to date; refuse another program's database or another schema version."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "meta" not in tables:
        raise StoreError(
            f"'{path}' is an SQLite file but not a knowcomp results file; choose another --out path"
        )
    with _transaction(db):
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        columns = {r[1] for r in db.execute("PRAGMA table_info(trials)")}
        if "recovery" not in columns:  # a file from before recover steps: same schema, + 1
            db.execute("ALTER TABLE trials ADD COLUMN recovery TEXT")
        if "lama_protocol" not in columns:  # likewise before LAMA protocols (NULL: templates)
            db.execute("ALTER TABLE trials ADD COLUMN lama_protocol TEXT")
        if "sequential" not in {r[1] for r in db.execute("PRAGMA table_info(results)")}:
            db.execute("ALTER TABLE results ADD COLUMN sequential TEXT")  # likewise
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(
                f"'{path}' was written by a knowcomp with results schema {row[0]}; this "
                f"knowcomp reads schema {SCHEMA_VERSION}; write to a new --out file"
            )


def _create_results_file(path: Path) -> None:
    """Create `path` with its schema complete, in one step, so that no other run ever sees it
    empty or half made (a second run started at the same moment would take it for a stranger's
    file). The schema is written to a private file beside it, which is then hard-linked to
    `path`; if another run linked its own first, that one is kept and this one is dropped."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        db = _connect(draft)
        try:
            _init_schema(db, path)
        finally:
            db.close()  # checkpoints the log: the draft is whole on its own
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another run created it first: use theirs
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(draft, path)
    finally:
        for leftover in (draft, *(draft.with_name(draft.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


def _check_writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(
            f"cannot create the folder for results file '{path}' ({err.strerror}); "
            "choose another --out path"
        ) from None
    target = path if path.exists() else path.parent
    if path.is_dir():
        raise StoreError(
            f"results path '{path}' is a folder; give a file, e.g. {path}/study.sqlite"
        )
    if not os.access(target, os.W_OK):
        raise StoreError(f"results file '{path}' is not writable; choose another --out path")
