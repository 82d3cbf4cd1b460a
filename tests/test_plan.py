"""`knowcomp plan`: items for 80% power, worst case or from a pilot, and its bad input."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from knowcomp.analysis.power import items_for_power
from knowcomp.cli.main import cli
from knowcomp.report import load_frame
from knowcomp.store import ResultsStore
from tests.test_report import full_store


def _plan(*args: str):
    return CliRunner().invoke(cli, ["plan", *args])


def _items(output: str) -> int:
    found = re.search(r"([\d,]+) items \(McNemar", output)
    assert found, output
    return int(found.group(1).replace(",", ""))


@pytest.mark.integration
def test_plan_gives_the_items_for_the_power_of_mcnemars_test():
    result = _plan("piqa", "--score", "64.5", "--drop", "3")
    assert result.exit_code == 0, result.output
    expected = items_for_power(0.645, 0.03)
    assert _items(result.output) == expected.items
    assert f"discordance {expected.discordance:.1%}: the worst case" in result.output
    stronger = _plan("piqa", "--score", "64.5", "--drop", "3", "--power", "0.9")
    assert _items(stronger.output) > expected.items


@pytest.mark.integration
def test_plan_from_a_pilot_uses_its_measured_discordance(tmp_path):
    pilot = full_store(tmp_path / "pilot.sqlite", measured=True)
    result = _plan("piqa", "--drop", "5", "--from", str(pilot))
    assert result.exit_code == 0, result.output
    # every PIQA trial of the pilot changes items one way (nested): discordance = |its drop|
    with ResultsStore(pilot) as store:
        drops = [abs(p.drop) for p in load_frame(store).points if p.probe == "piqa"]
    rate = sum(drops) / len(drops) / 100
    assert f"discordance {rate:.1%}: measured on {len(drops)} compressed trial(s)" in result.output
    assert "the pilot's baseline: acc 80.0%" in result.output
    assert _items(result.output) == items_for_power(0.8, 0.05, rate).items
    one = _plan("piqa", "--drop", "5", "--from", str(pilot), "--recipe",
                "prune:l1_unstructured:overall:0.2")  # fmt: skip
    assert "discordance 5.0%: measured on 1 compressed trial(s)" in one.output
    assert _items(one.output) < _items(_plan("piqa", "--score", "80", "--drop", "5").output)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["nope", "--score", "60", "--drop", "2"], "unknown probe 'nope'; choose from"),
     (["piqa", "--score", "60", "--drop", "0"], "--drop must be a positive number of points"),
     (["piqa", "--score", "60", "--drop", "-2"], "--drop must be a positive number of points"),
     (["piqa", "--score", "0", "--drop", "2"], "--score is the baseline score in percent"),
     (["piqa", "--score", "120", "--drop", "2"], "--score is the baseline score in percent"),
     (["piqa", "--score", "60", "--drop", "70"], "--drop 70 is larger than the baseline"),
     (["piqa", "--score", "60", "--drop", "2", "--power", "0"], "--power must lie between"),
     (["piqa", "--drop", "2"], "give the baseline score in percent"),
     (["piqa", "--score", "60", "--drop", "2", "--recipe", "x"], "give the pilot with --from")],
)  # fmt: skip
def test_plan_refuses_bad_input_in_one_line(tmp_path, args, message):
    result = _plan(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_plan_refuses_pilots_it_cannot_use_and_writes_nothing(tmp_path):
    old = full_store(tmp_path / "old.sqlite")  # its records do not add up: as if none
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _plan("piqa", "--drop", "2", "--from", str(old))
    assert result.exit_code == 2
    assert "has no per-item records for probe 'piqa' (written before records were kept?)" in (
        result.output
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    missing = _plan("piqa", "--drop", "2", "--from", str(tmp_path / "none.sqlite"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert not (tmp_path / "none.sqlite").exists()
    no_trial = _plan("winogrande", "--drop", "2", "--from", str(old))
    assert no_trial.exit_code == 2 and "no compressed trial with a baseline" in no_trial.output
    other = _plan("piqa", "--drop", "2", "--from", str(old), "--recipe", "quant:nothing")
    assert "no compressed trial of recipe 'quant:nothing'" in other.output
