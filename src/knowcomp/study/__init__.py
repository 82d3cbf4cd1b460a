"""Studies: a grid of trials from a spec, run locally or on Ray, kept in a results store."""

from knowcomp.store import ResultsStore, StoreError
from knowcomp.study.presets import PRESETS, preset_spec
from knowcomp.study.runner import RunListener, RunSummary, run_study
from knowcomp.study.spec import SpecError, StudySpec, Sweep, load_spec
from knowcomp.study.trials import Trial, expand

__all__ = [
    "PRESETS", "ResultsStore", "RunListener", "RunSummary", "SpecError", "StoreError",
    "StudySpec", "Sweep", "Trial", "expand", "load_spec", "preset_spec", "run_study",
]  # fmt: skip
