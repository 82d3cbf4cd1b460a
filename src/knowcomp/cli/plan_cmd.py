"""`knowcomp plan`: how many items a probe needs to detect a drop that matters."""

from __future__ import annotations

import math
from pathlib import Path

import click

from knowcomp.cli.format import console
from knowcomp.errors import KnowcompError


@click.command("plan")
@click.argument("probe")
@click.option(
    "--drop",
    "drop",
    type=float,
    required=True,
    help="The drop that matters, in points of the headline score (e.g. 2).",
)
@click.option(
    "--score",
    type=float,
    help="The baseline's headline score in percent (e.g. 60); with --from, the "
    "pilot's baseline by default.",
)
@click.option(
    "--power",
    type=float,
    default=0.8,
    show_default=True,
    help="Chance of detecting the drop (McNemar's exact test, two-sided 5%).",
)
@click.option(
    "--from",
    "pilot",
    type=click.Path(path_type=Path),
    help="A pilot results file (from knowcomp run): use its measured discordance "
    "(and LAMA's design effect) instead of the worst case.",
)
@click.option("--recipe", help="With --from: only the pilot's trials of this recipe.")
def plan(
    probe: str,
    drop: float,
    score: float | None,
    power: float,
    pilot: Path | None,
    recipe: str | None,
) -> None:
    """How many items of PROBE give POWER to detect a drop of DROP points from a baseline
    score of SCORE percent, with the paired test the report uses (McNemar's exact test).

    The answer rests on the discordance, the share of items the compressed model scores
    differently from the baseline: without --from, the worst case the two scores allow
    (every item one gets right the other gets wrong, as far as the scores let); with a pilot
    results file, the share measured on its compressed trials, and for LAMA, whose facts
    share a relation, the pilot's design effect multiplies the count.

    \b
    Examples:
      knowcomp plan piqa --score 64.5 --drop 3
      knowcomp plan lama-trex --drop 1 --from runs/pilot.sqlite
    """
    from knowcomp.analysis.power import check_plan, items_for_power, worst_discordance
    from knowcomp.probes.registry import get_probe

    checked = get_probe(probe)  # an unknown probe fails here, in one line
    _check_numbers(score, drop, power)
    if recipe is not None and pilot is None:
        raise KnowcompError("--recipe chooses trials of a pilot; give the pilot with --from")
    if pilot is None and score is None:
        raise KnowcompError(
            "give the baseline score in percent (--score 60), or a pilot results file (--from FILE)"
        )
    measured = None
    if pilot is not None:
        from knowcomp.report.pilot import read_pilot

        measured = read_pilot(pilot, checked.name, recipe)
    base = score / 100 if score is not None else measured.baseline  # type: ignore[union-attr]
    check_plan(base, drop / 100, power)
    discordance = None
    if measured is not None:  # within what the two scores allow
        discordance = min(
            max(measured.discordance, drop / 100), worst_discordance(base, drop / 100)
        )
    found = items_for_power(base, drop / 100, discordance, power)
    effect = measured.design_effect if measured is not None else 1.0
    items = math.ceil(found.items * effect)
    say = lambda text: console.print(text, highlight=False)  # noqa: E731
    points = "point" if drop == 1 else "points"
    say(f"[bold]{checked.name}[/]: a drop of {drop:g} {points} from a baseline of "
        f"{100 * base:.1f}%, {power:.0%} power")  # fmt: skip
    if measured is None:
        say(f"  discordance {found.discordance:.1%}: the worst case these scores allow "
            "(--from measures it on a pilot)")  # fmt: skip
    else:
        say(f"  discordance {measured.discordance:.1%}: measured on {measured.trials} "
            f"compressed trial(s) of the pilot, {measured.items:,} items each")  # fmt: skip
        say(f"  the pilot's baseline: {measured.metric} {100 * measured.baseline:.1f}%")
        if effect > 1:
            say(f"  design effect {effect:.2f} (facts share a relation): {found.items:,} "
                f"independent items x {effect:.2f}")  # fmt: skip
    say(f"  [bold]{items:,} items[/] (McNemar's exact test, two-sided 5%: exact power "
        f"{found.power:.3f}; normal approximation {found.approximate:,})")  # fmt: skip
    total = _size(checked)
    if total is not None:
        part = f"{items / total:.0%} of them" if items <= total else "fewer than this needs"
        say(f"  {checked.name} has {total:,} items at full size: {part}")


def _check_numbers(score: float | None, drop: float, power: float) -> None:
    if not drop > 0:
        raise KnowcompError(f"--drop must be a positive number of points; got {drop:g}")
    if not 0 < power < 1:
        raise KnowcompError(f"--power must lie between 0 and 1; got {power:g}")
    if score is None:
        return
    if not 0 < score < 100:
        raise KnowcompError(
            f"--score is the baseline score in percent, between 0 and 100; got {score:g}"
        )
    if drop > score:
        raise KnowcompError(f"--drop {drop:g} is larger than the baseline score {score:g}")


def _size(probe) -> int | None:
    """The probe's items at full size, where its data is present."""
    from knowcomp.probes.base import RunOptions

    try:
        return probe.count(RunOptions())
    except KnowcompError:
        return None
