"""Recovery after compression: LoRA, prompt tuning, prefix tuning (through peft) and IDP."""

from knowcomp.recovery.adapters import Adapter, load_adapter
from knowcomp.recovery.methods import TRAINERS, recover
from knowcomp.recovery.settings import METHODS, RecoveryError, parse_method
from knowcomp.recovery.training import TrainSettings

__all__ = [
    "METHODS",
    "TRAINERS",
    "Adapter",
    "RecoveryError",
    "TrainSettings",
    "load_adapter",
    "parse_method",
    "recover",
]
