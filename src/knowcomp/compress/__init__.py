"""Compression methods (a registry), recipes, and a session that applies and restores them."""

from knowcomp.compress.recipe import Recipe, Step, parse_recipe
from knowcomp.compress.registry import METHODS, get_method
from knowcomp.compress.session import CompressionSession

__all__ = ["METHODS", "CompressionSession", "Recipe", "Step", "get_method", "parse_recipe"]
