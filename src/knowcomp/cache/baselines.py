"""Baselines computed once, ever: a folder of uncompressed-model probe results, keyed by what
decides them (`keys.baseline_key`), that every command reads before running a baseline probe.

One entry is one file, `<sha256 of the key>.json`: a header line (the key, the model's name
as given, the payload's SHA-256, when and how fast it was computed) and the `ProbeResult` as
JSON on the next line. An entry is used only if its header parses, its key equals the one
asked for and its payload matches the checksum; anything else is reported in one line and
recomputed, and the new result replaces it. Entries of older versions (knowcomp's scoring
version, torch, transformers) are never looked up, since the versions are in the key;
`knowcomp cache list` marks them stale and `knowcomp cache clear --stale` removes them.

The folder is `KNOWCOMP_BASELINE_CACHE`, else `baselines/` in knowcomp's cache folder
(`KNOWCOMP_CACHE`, else `~/.cache/knowcomp`); `KNOWCOMP_BASELINE_CACHE=off` turns the cache
off. A folder that cannot be written is one note, and the run goes on without the cache: the
cache saves time and never changes a result, so it is no reason to stop a study.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from knowcomp.cache.keys import baseline_key, key_digest, versions
from knowcomp.models.loading import LoadedModel
from knowcomp.outputs import write_atomically
from knowcomp.paths import cache_dir
from knowcomp.probes.base import Probe, ProbeResult, RunOptions, run_probe

FORMAT = 1  # the entry file layout; another value is read as corrupt and recomputed
ENV = "KNOWCOMP_BASELINE_CACHE"
OFF = ("off", "none", "0", "false", "no")
FIX = f"set {ENV} to a writable folder, or {ENV}=off to run without it"


def _stderr_note(text: str) -> None:
    sys.stderr.write(f"note: {text}\n")


@dataclass(frozen=True)
class Entry:
    """What `knowcomp cache list` shows of one entry (read from its header line only)."""

    path: Path
    model: str
    probe: str
    weights: str
    size: int
    created: float
    state: str  # "ok", "stale" (computed under other versions) or "corrupt" (header unreadable)
    source: str = ""


class BaselineCache:
    """The cache folder: `get` a verified result, `put` one, `entries`, `clear`."""

    def __init__(self, root: Path, report: Callable[[str], None] = _stderr_note) -> None:
        self.root = Path(root)
        self.report = report
        self.problem: str | None = None  # set once writing failed; the cache is then read-only
        self.hits = 0
        self.misses = 0

    def path_for(self, key: dict[str, Any]) -> Path:
        return self.root / f"{key_digest(key)}.json"

    def get(self, key: dict[str, Any]) -> tuple[ProbeResult, dict[str, Any]] | None:
        """The stored result and its header, or None (absent, or corrupt: reported)."""
        path = self.path_for(key)
        if self.problem is not None:
            return None
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # absent; a bad folder fails in `put`
            return None
        except OSError as err:
            self._fail_once(f"the baseline cache folder {self.root} cannot be read "
                            f"({err.strerror}); running without it: {FIX}")  # fmt: skip
            return None
        problem, header, result = _parse(data, key)
        if problem is not None:
            self.report(f"baseline cache entry {path.name} is {problem}; recomputing it")
            return None
        return result, header  # type: ignore[return-value]

    def put(self, key: dict[str, Any], result: ProbeResult, *, loaded: LoadedModel,
            items: int) -> bool:  # fmt: skip
        """Store `result` under `key`; False (and one note, the first time) when the folder
        cannot be written."""
        if self.problem is not None:
            return False
        body = json.dumps(result.to_dict(), separators=(",", ":"))
        header = {
            "format": FORMAT, "key": key, "sha256": hashlib.sha256(body.encode()).hexdigest(),
            "model": loaded.spec, "source": loaded.source, "probe": result.probe,
            "created": time.time(), "seconds": result.seconds, "items": items,
        }  # fmt: skip
        try:
            write_atomically(self.path_for(key), json.dumps(header, default=str) + "\n" + body)
        except OSError as err:
            self._fail_once(f"the baseline cache folder {self.root} cannot be written "
                            f"({err.strerror}); running without it: {FIX}")  # fmt: skip
            return False
        return True

    def _fail_once(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem
            self.report(problem)

    def entries(self) -> list[Entry]:
        """Every entry file in the folder, newest first."""
        if not self.root.is_dir():
            return []
        now = versions()
        found = [_entry(path, now) for path in self.root.glob("*.json")]
        return sorted(found, key=lambda e: -e.created)

    def clear(self, *, model: str | None = None, stale: bool = False) -> list[Entry]:
        """Delete the entries of `model` (its name as given, its folder, or a prefix of its
        weights hash), or the stale and corrupt ones, or all; the entries deleted."""
        chosen = [e for e in self.entries() if _matches(e, model, stale)]
        for entry in chosen:
            entry.path.unlink(missing_ok=True)
        return chosen


def _parse(data: bytes, key: dict[str, Any]) -> tuple[str | None, Any, Any]:
    """(problem, header, result): problem is None when the entry can be trusted for `key`."""
    first, _, body = data.partition(b"\n")
    try:
        header = json.loads(first)
    except ValueError:
        return "corrupt (its header is not JSON)", None, None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return "of another format", None, None
    if header.get("key") != json.loads(json.dumps(key, default=str)):
        return "for another key (a stale or foreign file)", None, None
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        return "corrupt (its checksum does not match)", None, None
    try:
        payload = json.loads(body)
        names = {f.name for f in fields(ProbeResult)}
        result = ProbeResult(**{k: v for k, v in payload.items() if k in names})
    except (ValueError, TypeError, AttributeError):
        return "corrupt (its result cannot be read)", None, None
    return None, header, result


def _entry(path: Path, now: dict[str, Any]) -> Entry:
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            header = json.loads(handle.readline())
        key = header["key"]
        state = "ok" if header.get("format") == FORMAT and key["versions"] == now else "stale"
        model, probe, source = str(header["model"]), str(header["probe"]), header.get("source")
        created = float(header["created"])
        return Entry(path, model, probe, str(key["weights"]), size, created, state, str(source))
    except (OSError, ValueError, KeyError, TypeError):
        return Entry(path, "?", "?", "", size, path.stat().st_mtime, "corrupt")


def _matches(entry: Entry, model: str | None, stale: bool) -> bool:
    if stale and entry.state == "ok":
        return False
    if model is None:
        return True
    as_path = Path(model).expanduser()
    return (
        model == entry.model
        or (as_path.exists() and str(as_path.resolve()) == entry.source)
        or (len(model) >= 8 and entry.weights.startswith(model.lower()))
    )


_caches: dict[Path, BaselineCache] = {}


def cache_root() -> Path | None:
    """The baseline cache folder, or None when `KNOWCOMP_BASELINE_CACHE` turns it off."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in OFF:
        return None
    return Path(env).expanduser() if env else cache_dir() / "baselines"


def default_cache() -> BaselineCache | None:
    """The process's cache for the current folder (one object per folder, so a folder that
    cannot be written is reported once), or None when the cache is off."""
    root = cache_root()
    if root is None:
        return None
    if root not in _caches:
        _caches[root] = BaselineCache(root)
    return _caches[root]


def _counting(progress: Callable[[int], None] | None, counted: list[int]) -> Callable[[int], None]:
    def step(n: int) -> None:
        counted[0] += n
        if progress is not None:
            progress(n)

    return step


def cached_probe_run(
    loaded: LoadedModel,
    probe: Probe,
    options: RunOptions,
    *,
    baseline: bool = True,
    cache: BaselineCache | None = None,
    run: Callable[[RunOptions], ProbeResult] | None = None,
) -> ProbeResult:
    """`probe.run(loaded, options)`, read from the baseline cache where an entry for this
    model, probe, data and options is stored, and stored there after it runs. Callers pass
    `baseline=False` for a compressed model or one with an adapter attached (an adapter's
    prompts are not in the weights): those always run. `run(options)` computes a result that
    is not cached (default: `run_probe`; a study's prefix cache records through it)."""
    if run is None:
        run = lambda chosen: run_probe(probe, loaded, chosen)  # noqa: E731
    cache = cache if cache is not None else default_cache()
    key = baseline_key(loaded, probe, options) if baseline and cache is not None else None
    if key is None or cache is None:
        return run(options)
    found = cache.get(key)
    if found is not None:
        result, header = found
        cache.hits += 1  # no progress is reported: a study's ETA counts work done (`eta`)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(header["created"]))
        result.notes.append(f"read from the baseline cache (computed {when} in "
                            f"{header['seconds']:.1f} s; `knowcomp cache clear` recomputes "
                            "it)")  # fmt: skip
        return result
    cache.misses += 1
    counted = [0]
    counting = RunOptions(**{**options.__dict__, "progress": _counting(options.progress, counted)})
    result = run(counting)
    cache.put(key, result, loaded=loaded, items=counted[0])
    return result
