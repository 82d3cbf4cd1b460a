"""Where knowcomp keeps its data and caches (overridable by environment variables)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of knowcomp's caches: `KNOWCOMP_CACHE`, else `$XDG_CACHE_HOME/knowcomp`."""
    env = os.environ.get("KNOWCOMP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "knowcomp"


def data_dir() -> Path:
    """The evaluation data directory: `KNOWCOMP_DATA`, else `<cache>/data`."""
    env = os.environ.get("KNOWCOMP_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def model_cache_dir() -> Path:
    """Dequantized copies of GGUF models, so the slow GGUF decode is paid once."""
    return cache_dir() / "models"
