"""Caches that spare recomputation: uncompressed-model probe results (`baselines`), keyed by
fingerprints of what decides them (`keys`, `fingerprints`)."""

from knowcomp.cache.baselines import BaselineCache, cache_root, cached_probe_run, default_cache

__all__ = ["BaselineCache", "cache_root", "cached_probe_run", "default_cache"]
