"""The README's set-up and test commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(block) == 2, "the README starts with exactly two set-up commands"
    assert block[0] in ci.splitlines()  # the install command
    test_command = re.search(r"^Tests: `(.+)`$", readme, re.M).group(1)
    assert test_command in ci.splitlines()
