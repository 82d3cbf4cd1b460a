"""knowcomp: how much of a language model's knowledge survives compression."""

from knowcomp import _quiet  # noqa: F401  (silence third-party import noise first)
from knowcomp.errors import KnowcompError

__version__ = "0.1.0"

__all__ = ["KnowcompError", "__version__"]
