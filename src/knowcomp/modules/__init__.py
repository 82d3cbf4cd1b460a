"""Name the module groups of any architecture and count their parameters."""

from knowcomp.modules.groups import (
    GROUP_DESCRIPTIONS,
    GROUPS,
    LinearLayer,
    classify_linear_layers,
    resolve_group,
)
from knowcomp.modules.layers import is_linear, weight_shape

__all__ = [
    "GROUPS",
    "GROUP_DESCRIPTIONS",
    "LinearLayer",
    "classify_linear_layers",
    "is_linear",
    "resolve_group",
    "weight_shape",
]
