"""LAMA by generation for decoders (`--lama-mode generate`): the model continues the text before
the slot greedily, and a fact counts when the answer equals the object.

The answer ends at the QA probes' stop rule (newline, period, comma, end of text, the cap) or
where the template's own text after the slot begins: for `[X] is a [Y] by profession .` the
generation `lawyer by profession.` gives the answer `lawyer`. It is compared with the object as
the QA probes compare answers (lower case, punctuation dropped, surrounding whitespace
stripped), so objects of several tokens are scored like single-token ones, with no candidate
list. `exact_match_macro` averages relations, `exact_match_micro` facts; `capped` is the share
of answers that reached the cap.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any

from knowcomp.models.forward import require_decoder
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import RunOptions
from knowcomp.probes.generate import DEFAULT_STOPS, StopRule, generate_texts, rule_for
from knowcomp.probes.inputs import InputRule
from knowcomp.probes.lama.items import SLOT, ClozeItem
from knowcomp.probes.qa.normalize import exact_match


def slot_stop(right: str, rule: StopRule) -> tuple[str, ...]:
    """The template's text after the slot, up to its first stop string, as an extra stop
    (`" by profession ."` -> `(" by profession",)`; `" ."` -> none)."""
    fragment, _ = rule.cut(right)
    fragment = fragment.rstrip()
    return (fragment,) if fragment.strip() else ()


def score_generated(
    loaded: LoadedModel,
    chosen: list[tuple[ClozeItem, dict[str, Any]]],
    options: RunOptions,
    inputs: InputRule | None = None,
) -> None:
    """Fill each record with the generated answer, whether it matched, and whether it was capped
    (`inputs`: how prompts become tokens; the tokenizer's `auto` rule by default)."""
    require_decoder(loaded, "LAMA probes in generate mode")
    rule = rule_for(options, DEFAULT_STOPS)
    prompts, extras, targets = [], [], []
    for item, record in chosen:
        if item.problem:
            record["skipped"] = item.problem
            continue
        left, right = item.text.split(SLOT)
        prompts.append(left.rstrip())
        extras.append(slot_stop(right, rule))
        targets.append((item, record))
    generations = generate_texts(loaded, prompts, rule, extra_stops=extras,
                                 progress=options.progress, inputs=inputs)  # fmt: skip
    for (item, record), generation in zip(targets, generations, strict=True):
        prediction = generation.text.strip()
        record.update(prediction=prediction, matched=exact_match(prediction, [item.obj]),
                      capped=generation.capped)  # fmt: skip


def generation_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Exact match over facts (micro) and over relations (macro), and the capped share."""
    scored = [r for r in records if "matched" in r]
    if not scored:
        nan = float("nan")
        return {"exact_match_micro": nan, "exact_match_macro": nan, "capped": nan}
    by_relation: dict[str, list[bool]] = defaultdict(list)
    for r in scored:
        by_relation[r["relation"]].append(r["matched"])
    return {
        "exact_match_micro": mean(float(r["matched"]) for r in scored),
        "exact_match_macro": mean(mean(map(float, v)) for v in by_relation.values()),
        "capped": mean(float(r["capped"]) for r in scored),
    }
