"""What decides a result besides its options: package versions and the input rule."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any


def package_versions() -> dict[str, str]:
    """The versions that decide a result, stored with every trial."""
    from knowcomp.cache.keys import SCORING_VERSION

    versions = {"python": platform.python_version(), "knowcomp scoring": str(SCORING_VERSION)}
    for package in ("knowcomp", "torch", "transformers", "torchao"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def input_rule_version(loaded: Any, add_bos: str) -> str:
    """The input rule a decoder's probes are scored under (`probes.inputs`): its version, and
    whether a BOS token comes first; the version alone for other families."""
    from knowcomp.models.family import Family
    from knowcomp.probes.inputs import INPUT_RULE, input_rule

    rule = f"{INPUT_RULE}"
    if loaded.family is Family.DECODER:
        bos = input_rule(loaded.tokenizer, add_bos).add_bos
        rule += f" (BOS {'first' if bos else 'none'}, add_bos {add_bos})"
    return rule
