"""What a pilot results file says about planning a probe: its measured discordance.

`knowcomp plan --from FILE` sizes a probe from a pilot instead of the worst case: for every
compressed trial of the file that scored the probe, paired with its baseline on the same items,
the share of items the two scored differently (the discordance McNemar's test lives on), and
for clustered items (LAMA relations) the design effect, the variance of the paired mean under
clustering over its variance if items were independent.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowcomp.analysis.intervals import clustered_se
from knowcomp.errors import KnowcompError
from knowcomp.report.frame import load_frame


@dataclass(frozen=True)
class Pilot:
    probe: str
    baseline: float  # mean baseline headline score over the pilot's baselines (fraction)
    metric: str
    discordance: float  # mean over the paired trials
    design_effect: float  # >= 1 where items cluster, 1.0 otherwise
    trials: int
    items: int  # items per trial (mean)


def read_pilot(db: Path, probe: str, recipe: str | None = None) -> Pilot:
    """The pilot's measured numbers for `probe` (only trials of `recipe`, if given); one-line
    errors for a file that is not a results file, has no such trials, or no records."""
    from knowcomp.report.build import check_results_file
    from knowcomp.store import ResultsStore

    check_results_file(Path(db))
    with ResultsStore(db) as store:
        frame = load_frame(store)
    baselines = [b for b in frame.baselines if b.probe == probe]
    if not baselines:
        raise KnowcompError(
            f"the pilot '{db}' has no uncompressed result for probe '{probe}'; run the pilot "
            "study with that probe, or plan without --from"
        )
    points = [p for p in frame.points if p.probe == probe and p.baseline is not None
              and (recipe is None or p.recipe == recipe)]  # fmt: skip
    if not points:
        which = f" of recipe '{recipe}'" if recipe else ""
        raise KnowcompError(
            f"the pilot '{db}' has no compressed trial{which} with a baseline for probe "
            f"'{probe}'; plan without --from for the worst case"
        )
    rates, effects, sizes = [], [], []
    for point in points:
        base_key = frame.intervals.baseline_of.get((point.trial_key, probe))
        pair = (
            None if base_key is None else frame.intervals.paired((base_key, point.trial_key), probe)
        )
        if pair is None:
            continue
        rows, codes = pair
        d = rows[0] - rows[1]
        rates.append(float(np.mean(d != 0)))
        sizes.append(len(d))
        naive = float(d.std(ddof=1)) ** 2 / len(d) if len(d) > 1 else 0.0
        if codes is not None and naive > 0 and int(codes.max()) + 1 < len(d):
            effects.append(max(1.0, clustered_se(d, codes) ** 2 / naive))
    if not rates:
        raise KnowcompError(f"the pilot '{db}' has no per-item records for probe '{probe}' "
                            "(written before records were kept?); rerun the pilot with this "
                            "knowcomp, or plan without --from")  # fmt: skip
    return Pilot(probe, statistics.fmean(b.value for b in baselines), baselines[0].metric,
                 statistics.fmean(rates), statistics.fmean(effects) if effects else 1.0,
                 len(rates), round(statistics.fmean(sizes)))  # fmt: skip
