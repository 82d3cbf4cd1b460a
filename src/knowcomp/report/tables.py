"""The report's tables: the baseline (rows models, columns probes), the first study's tables in
its layout (`report.paper_tables`), drops, category averages, and the recovery tables.

Each cell is the probe's headline score in percent (P@1 micro for LAMA, accuracy for multiple
choice, exact match for QA), the mean over seeds with its standard deviation when there are
several. A probe with no result is shown as missing ("–", an empty CSV cell), never as zero,
and a table with no data at all is not written. A cell may also be text a table formatted
itself (trainable parameters, losses), written as it is.
"""

from __future__ import annotations

from knowcomp.report.frame import Frame
from knowcomp.report.hoang_tables import hoang_tables
from knowcomp.report.paper_tables import paper_tables
from knowcomp.report.recovery import recovery_tables
from knowcomp.report.stats import Arm, Cell, arms, baseline_score, cell, draws_interval
from knowcomp.report.table import Table
from knowcomp.report.uncertainty import mean_of_draws


def build_tables(frame: Frame) -> list[Table]:
    """Every table the data supports: the baseline, the first study's Tables 1 and 4-6 in its
    layout (`report.paper_tables`), drops, category averages, and recovery."""
    all_arms = arms(frame)
    tables = [_baseline_table(frame), *paper_tables(frame, all_arms)]
    tables.append(drops_table(frame, all_arms))
    tables.append(category_table(frame, all_arms))
    recovery = recovery_tables(frame)
    tables += recovery
    tables += hoang_tables(frame, recovery)
    return [t for t in tables if t is not None and t.rows]


def _baseline_table(frame: Frame) -> Table:
    table = Table("baseline", "Uncompressed baseline", ["Model"], frame.probes,
                  note=_UNITS)  # fmt: skip
    for model in frame.models:
        cells = [baseline_score(frame, model, probe) for probe in frame.probes]
        if any(c is not None for c in cells):
            table.rows.append(([model], cells))
    return table


def drops_table(frame: Frame, all_arms: list[Arm]) -> Table:
    """Every compression's drop against its baseline, per seed: the paired drop in points with
    its 95% interval over the same items (McNemar's exact test for the p-value)."""
    table = Table("drops", "Drop against the uncompressed baseline, in points [95% interval]",
                  ["Model", "Compression", "Seed"], frame.probes, note=_DROP_NOTE)  # fmt: skip
    for model in frame.models:
        for arm in all_arms:
            if arm.model != model:
                continue
            for seed in arm.seeds:
                one = Arm(arm.model, arm.recipe, arm.compression,
                          [p for p in arm.points if p.seed == seed], arm.intervals)  # fmt: skip
                cells = [one.drop_of(p) for p in frame.probes]
                if any(c is not None for c in cells):
                    table.rows.append(([model, arm.recipe, str(seed)], cells))
    return table


_DROP_NOTE = (
    "Baseline minus compressed headline score on the same items, in percentage points "
    "(positive: knowledge lost). The interval is paired: Agresti-Min for a difference of "
    "matched proportions, with McNemar's exact test (p in the CSV); LAMA's facts share a "
    "relation, so LAMA drops use a relation-clustered (jackknife) standard error and t test. "
    "A drop without an interval has no per-item records to pair."
)


_UNITS = (
    "Headline score in percent: P@1 (micro) for LAMA, accuracy for multiple choice (acc_norm "
    "when the report was asked for it) and LAMBADA, exact match for QA. A LAMA probe named "
    "PROBE@cost-of-compression is scored under the first study's protocol (string match of "
    "the top token, several-token objects counted wrong), the others under LAMA's template "
    "protocol."
)


def category_table(frame: Frame, all_arms: list[Arm]) -> Table | None:
    """Averages by knowledge category (world knowledge, common reasoning, ...) per model and
    compression, from `knowcomp.probes.categories`; None where that module is not installed."""
    try:
        from knowcomp.probes.base import ProbeResult
        from knowcomp.probes.categories import CATEGORIES, DISPLAY_NAMES, category_averages
    except ImportError:
        return None

    def averages(points: list) -> dict[str, Cell | None]:
        by_seed: dict[int, list[ProbeResult]] = {}
        keys: dict[tuple[int, str], str] = {}
        for p in points:
            result = ProbeResult(p.probe, p.category or "custom", p.metrics, {})
            by_seed.setdefault(p.seed, []).append(result)
            keys[(p.seed, p.probe)] = p.trial_key
        values: dict[str, list[float]] = {}
        members: dict[str, tuple[str, ...]] = {}
        for results in by_seed.values():
            layout = category_averages(results, choice_metric=frame.choice_metric)
            for average in layout.categories:
                if average.score is not None:
                    values.setdefault(average.category, []).append(100 * average.score)
                    members[average.category] = average.present
            if layout.overall is not None:
                values.setdefault("average", []).append(100 * layout.overall)
                members["average"] = tuple(p for a in layout.categories for p in a.present)
        out = {}
        for key, v in values.items():
            interval = None
            if len(by_seed) == 1:
                (seed,) = by_seed
                draws = [frame.intervals.score_draws(keys[(seed, p)], p) for p in members[key]]
                interval = draws_interval(mean_of_draws(draws))
            out[key] = cell(v, interval)
        return out

    rows: list[tuple[list[str], dict[str, Cell | None]]] = []
    for model in frame.models:
        rows.append(
            ([model, "baseline"], averages([b for b in frame.baselines if b.model == model]))
        )
        for arm in all_arms:
            if arm.model == model:
                rows.append(([model, arm.recipe], averages(arm.points)))
    seen = {key for _, found in rows for key in found}
    columns = [c for c in CATEGORIES if c in seen]
    columns += sorted(seen - set(CATEGORIES) - {"average"})
    table = Table(
        "categories",
        "Averages by knowledge category",
        ["Model", "Compression"],
        [DISPLAY_NAMES.get(c, c) for c in columns] + ["Average"],
        note="Mean headline score in percent of each category's probes, and of all probes "
        "(the headline of the tables above); for one seed, the 95% interval of a stratified "
        "bootstrap (items resampled within each probe, LAMA's by relation).",
    )
    for labels, found in rows:
        if found:
            table.rows.append((labels, [found.get(c) for c in [*columns, "average"]]))
    return table
