"""The one load -> compress -> recover -> probe pipeline every command and study runs."""

from knowcomp.pipeline.core import Compressed, Evaluation, Pipeline, ProgressFactory
from knowcomp.pipeline.provenance import input_rule_version, package_versions

__all__ = [
    "Compressed",
    "Evaluation",
    "Pipeline",
    "ProgressFactory",
    "input_rule_version",
    "package_versions",
]
