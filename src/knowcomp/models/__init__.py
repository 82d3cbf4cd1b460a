"""Load a model + tokenizer from any spec and know its family."""

from knowcomp.models.family import Family, detect_family
from knowcomp.models.loading import LoadedModel, load_model

__all__ = ["Family", "LoadedModel", "detect_family", "load_model"]
