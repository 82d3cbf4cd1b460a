"""Where the T-REx numbers of the two LAMA protocols part: reads the `--out` files of
`knowcomp eval ... --lama-protocol templates` and `... --lama-protocol cost-of-compression`.

    python examples/compare_lama_protocols.py t.json c.json

Prints the template protocol's P@1 on the relations the evidence sentences cover, and, under
the cost-of-compression protocol, the accuracy on one-token objects by the object's own token
and by string match, and the accuracy with several-token objects counted wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean


def trex_records(path: str, probe: str) -> list[dict]:
    results = json.loads(Path(path).read_text(encoding="utf-8"))["results"]
    return next(r["records"] for r in results if r["probe"] == probe)


def main(templates_file: str, study_file: str) -> None:
    study = trex_records(study_file, "lama-trex@cost-of-compression")
    covered = {r["relation"] for r in study}
    template = [r for r in trex_records(templates_file, "lama-trex") if r.get("rank")]
    template = [r for r in template if r["relation"] in covered]
    print(f"templates, {len(covered)} relations: P@1 {mean(r['p@1'] for r in template):.3f} "
          f"({len(template)} facts)")  # fmt: skip
    single = [r for r in study if r.get("rank")]
    right = [r for r in single if r["correct"]]
    print(f"evidence sentences, one-token objects ({len(single)} facts): own token "
          f"{mean(r['rank'] == 1 for r in single):.3f}, string match "
          f"{mean(r['correct'] for r in single):.3f} ({sum(r['rank'] != 1 for r in right)} of "
          f"{len(right)} right answers are another token)")  # fmt: skip
    counted = [r for r in study if "correct" in r]
    print(f"with several-token objects counted wrong ({len(counted)} facts): "
          f"{mean(r['correct'] for r in counted):.3f}")  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:3])
