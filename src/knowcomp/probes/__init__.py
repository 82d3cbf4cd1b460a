"""Knowledge probes in a registry: LAMA cloze, multiple choice, language modelling."""

from knowcomp.probes.base import Probe, ProbeResult
from knowcomp.probes.registry import PROBES, get_probe, probe_names

__all__ = ["PROBES", "Probe", "ProbeResult", "get_probe", "probe_names"]
