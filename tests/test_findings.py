"""The findings as the papers state them: per model and per probe kind, saturation, like with
like, and the second study's claims, on synthetic results stores (real SQLite files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowcomp.report import check_findings
from knowcomp.store import ResultsStore
from tests.test_report import _frame, _outcome, _prune, _quant

LORA = {"method": "lora", "label": "lora", "settings": "r=8", "trainable_params": 5000,
        "log": {"tokens": 8, "steps": 1, "seconds": 1.0}}  # fmt: skip


def _store(path: Path, trials: list[tuple]) -> Path:
    """Write (model, recipe, steps, scores[, recovery]) trials, seed 0, with per-item records
    that add up to each score (400 nested items per probe, LAMA facts in four relations)."""
    with ResultsStore(path) as store:
        for model, recipe, steps, scores, *recovery in trials:
            outcome = _outcome(model, recipe, steps, 0, scores, measured=True)
            if recovery:
                outcome.trial["trial_key"] += f"|{recovery[0]['label']}"
                outcome.trial["recovery"] = recovery[0]
            store.write(outcome)
    return path


def _findings(path: Path) -> dict:
    return {str(f.number): f for f in check_findings(_frame(path))}


def _quant_trials(model: str, base: dict, att: dict, ff: dict) -> list[tuple]:
    return [(model, None, [], base),
            (model, "quant:dynamic_int8:attention", _quant("attention"), att),
            (model, "quant:dynamic_int8:feed_forward", _quant("feed_forward"), ff)]  # fmt: skip


def test_a_finding_holds_for_all_models_only_if_it_holds_for_each(tmp_path):
    """m1 shows the claim strongly, m2 the opposite: the average of the two would still
    favour the claim (20 - 5 points), but the paper says "for all models"."""
    trials = _quant_trials("m1", {"piqa": 0.8}, {"piqa": 0.78}, {"piqa": 0.58})
    trials += _quant_trials("m2", {"piqa": 0.8}, {"piqa": 0.70}, {"piqa": 0.75})
    three = _findings(_store(tmp_path / "s.sqlite", trials))["3"]
    assert three.verdict == "does not hold"
    assert "It holds for 1 of 2 model(s): m1 holds, m2 does not hold." in three.summary
    assert len(three.tests) == 2 and all("Holm-adjusted p" in t for t in three.tests)
    expected = ("m2, multiple-choice probes (accuracy), dynamic_int8: drop feed_forward - drop "
                "attention = -5.00 points")  # fmt: skip
    assert three.tests[1].startswith(expected)
    # the same two models, both in the claimed direction: holds for both
    trials = _quant_trials("m1", {"piqa": 0.8}, {"piqa": 0.78}, {"piqa": 0.58})
    trials += _quant_trials("m2", {"piqa": 0.8}, {"piqa": 0.75}, {"piqa": 0.65})
    three = _findings(_store(tmp_path / "t.sqlite", trials))["3"]
    assert three.verdict == "holds" and "holds for 2 of 2 model(s)" in three.summary


def test_one_model_inconclusive_leaves_the_finding_inconclusive(tmp_path):
    trials = _quant_trials("m1", {"piqa": 0.8}, {"piqa": 0.78}, {"piqa": 0.58})
    trials += _quant_trials("m2", {"piqa": 0.8}, {"piqa": 0.7925}, {"piqa": 0.79})  # 1 item
    three = _findings(_store(tmp_path / "s.sqlite", trials))["3"]
    assert three.verdict == "inconclusive"
    assert "holds in 1 of 2 unit(s) (1 inconclusive)" in three.summary
    assert "items per probe (now 400) would give 80% power" in three.tests[1]


def test_lama_and_multiple_choice_drops_are_never_averaged(tmp_path):
    """LAMA supports the claim, multiple choice contradicts it: one unit each, and the
    contradiction decides; no test line mixes a P@1 drop with an accuracy drop."""
    base = {"lama-trex": 0.5, "piqa": 0.8}
    trials = _quant_trials("m", base, {"lama-trex": 0.48, "piqa": 0.70},
                           {"lama-trex": 0.20, "piqa": 0.78})  # fmt: skip
    three = _findings(_store(tmp_path / "s.sqlite", trials))["3"]
    assert three.verdict == "does not hold"
    lama, mc = three.tests
    assert lama.startswith("m, LAMA probes (P@1), dynamic_int8: drop feed_forward - drop "
                           "attention = 28.00 points")  # fmt: skip
    assert mc.startswith("m, multiple-choice probes (accuracy), dynamic_int8: drop "
                         "feed_forward - drop attention = -8.00 points")  # fmt: skip
    assert "lama-trex" in three.evidence[0] and "piqa" not in three.evidence[0]


def _sweep(model: str, base: dict, by_level: dict[float, dict], group: str = "overall"):
    trials = [(model, None, [], base)]
    for level, scores in by_level.items():
        trials.append((model, f"prune:l1_unstructured:{group}:{level}", _prune(group, level),
                       scores))  # fmt: skip
    return trials


def test_knowledge_at_its_floor_by_50_percent_is_saturated_not_evidence_against(tmp_path):
    """LAMA at zero and PIQA at its majority class (50%) by 40%: nothing is left to drop
    above 50%, so the flat slope there says nothing about the claim."""
    trials = _sweep(
        "m",
        {"lama-trex": 0.05, "piqa": 0.8},
        {0.4: {"lama-trex": 0.0, "piqa": 0.5}, 0.8: {"lama-trex": 0.0, "piqa": 0.5}},
    )
    two = _findings(_store(tmp_path / "s.sqlite", trials))["2"]
    assert two.verdict == "saturated"
    assert "cannot be checked" in two.summary and not two.tests
    assert any("overall piqa at its floor by 40% (50.0 [" in e
               and "floor 50.0)" in e for e in two.evidence)  # fmt: skip
    # the old check (slope above 50% against slope below) called this "does not hold"


def test_a_saturated_kind_is_not_counted_and_the_slope_stops_at_the_floor(tmp_path):
    """LAMA saturated by 40%; PIQA drops 5 points to 40%, then reaches its floor at 60%: the
    slope above 50% runs to 60% (15 points per 10%), not to 80% where it would halve."""
    trials = _sweep("m", {"lama-trex": 0.05, "piqa": 0.8},
                    {0.4: {"lama-trex": 0.0, "piqa": 0.75}, 0.6: {"lama-trex": 0.0, "piqa": 0.5},
                     0.8: {"lama-trex": 0.0, "piqa": 0.5}})  # fmt: skip
    two = _findings(_store(tmp_path / "s.sqlite", trials))["2"]
    assert two.verdict == "holds"
    assert "holds in 1 of 1 unit(s); 1 saturated, not counted" in two.summary
    (test,) = two.tests
    assert test.startswith(
        "m, multiple-choice probes (accuracy), l1_unstructured: slope above 50% - slope up "
        "to 50% = 11.25 points per 10% sparsity"  # 12.5 - 1.25
    )
    assert any("drop 5.00 at 40%, 30.00 at 60%" in e for e in two.evidence)


def test_a_slope_that_flattens_before_the_floor_does_not_hold(tmp_path):
    trials = _sweep("m", {"piqa": 0.8}, {0.4: {"piqa": 0.6}, 0.8: {"piqa": 0.58}})
    assert _findings(_store(tmp_path / "s.sqlite", trials))["2"].verdict == "does not hold"


def _final(model: str, method: str, level: float, scores: dict, extra: str = "") -> tuple:
    steps = _prune("final_layer", level, method)
    if method == "ln_structured":
        steps[0]["p"] = 1.0
    return (model, f"prune:{method}:final_layer:{level}{extra}", steps, scores)


def test_finding_4_compares_l1_with_l1_and_leaves_random_pruning_out(tmp_path):
    base = {"piqa": 0.8}
    trials = [("m", None, [], base)]
    only_random = [
        _final("m", "random_structured", 0.4, {"piqa": 0.79}),
        _final("m", "random_unstructured", 0.4, {"piqa": 0.6}),
    ]
    four = _findings(_store(tmp_path / "r.sqlite", trials + only_random))["4"]
    assert four.verdict == "not enough data" and "ln_structured, p=1" in four.summary
    l1 = [
        _final("m", "ln_structured", 0.4, {"piqa": 0.6}),
        _final("m", "l1_unstructured", 0.4, {"piqa": 0.78}),
    ]
    four = _findings(_store(tmp_path / "s.sqlite", trials + only_random + l1))["4"]
    assert four.verdict == "holds"  # random's opposite result is not pooled in
    (test,) = four.tests
    assert "drop structured - drop unstructured (mean over levels) = 18.00 points" in test
    assert "random" not in " ".join(four.evidence)


def test_finding_1_per_kind_and_method(tmp_path):
    trials = [("m", None, [], {"lama-trex": 0.5})]
    for group, value in (("overall", 0.2), ("attention", 0.45), ("feed_forward", 0.4)):
        trials.append(("m", f"prune:l1_unstructured:{group}:0.5", _prune(group, 0.5),
                       {"lama-trex": value}))  # fmt: skip
    one = _findings(_store(tmp_path / "s.sqlite", trials))["1"]
    assert one.verdict == "holds" and len(one.tests) == 2
    assert all(t.startswith("m, LAMA probes (P@1), l1_unstructured: ") for t in one.tests)


# -- the second study's claims ---------------------------------------------------------------
def _recovery(method: str, params: int = 1000) -> dict:
    return {**LORA, "method": method, "label": method, "trainable_params": params}


PRUNED = ("m", "prune:sparsegpt:overall:0.5", _prune("overall", 0.5, "sparsegpt"))
QUANT = ("m", "quant:gptq:overall", [{"kind": "quant", "method": "gptq", "group": "overall"}])


def _recovered(compression: tuple, method: str, score: float, params: int = 1000) -> tuple:
    return (*compression, {"piqa": score}, _recovery(method, params))


def test_displaced_knowledge_holds_fails_and_needs_a_loss(tmp_path):
    base = [("m", None, [], {"piqa": 0.8}), (*PRUNED, {"piqa": 0.6})]
    # prompt tuning wins back 80% of a 20-point loss; IDP 10%
    trials = [*base, _recovered(PRUNED, "prompt", 0.76)]
    h1 = _findings(_store(tmp_path / "a.sqlite", trials))["H1"]
    assert h1.verdict == "holds", h1.tests
    assert h1.tests[0].startswith("m, prune:sparsegpt:overall:0.5, prompt, multiple-choice "
                                  "probes (accuracy): recovered share = 80.00% [")  # fmt: skip
    assert "p against 50 = " in h1.tests[0]
    trials = [*base, _recovered(PRUNED, "prompt", 0.76), _recovered(PRUNED, "idp", 0.62)]
    h1 = _findings(_store(tmp_path / "b.sqlite", trials))["H1"]
    assert h1.verdict == "does not hold" and "It holds for 0 of 1 model(s)" in h1.summary
    # a compression that lost nothing significant leaves nothing to recover: not counted
    trials = [("m", None, [], {"piqa": 0.8}), (*PRUNED, {"piqa": 0.7975}),
              _recovered(PRUNED, "prompt", 0.8)]  # fmt: skip
    h1 = _findings(_store(tmp_path / "c.sqlite", trials))["H1"]
    assert h1.verdict == "saturated" and "lost too little" in h1.evidence[-1]
    # LoRA is not input-side: it says nothing about this claim
    trials = [*base, _recovered(PRUNED, "lora", 0.79)]
    assert _findings(_store(tmp_path / "d.sqlite", trials))["H1"].verdict == "not enough data"


def test_idp_against_lora_needs_fewer_parameters_and_no_worse_score(tmp_path):
    base = [("m", None, [], {"piqa": 0.8}), (*PRUNED, {"piqa": 0.6})]
    same = [*base, _recovered(PRUNED, "idp", 0.7, 300), _recovered(PRUNED, "lora", 0.7, 5000)]
    h2 = _findings(_store(tmp_path / "a.sqlite", same))["H2"]
    assert h2.verdict == "holds", h2.tests
    assert "recovered IDP - recovered LoRA = 0.00 points" in h2.tests[0]
    assert "trainable parameters: IDP 300, LoRA 5,000" in h2.evidence[0]
    bigger = [*base, _recovered(PRUNED, "idp", 0.7, 9000), _recovered(PRUNED, "lora", 0.7, 5000)]
    h2 = _findings(_store(tmp_path / "b.sqlite", bigger))["H2"]
    assert h2.verdict == "does not hold" and "not fewer than LoRA's 5,000" in h2.tests[-1]
    worse = [*base, _recovered(PRUNED, "idp", 0.62, 300), _recovered(PRUNED, "lora", 0.7, 5000)]
    assert _findings(_store(tmp_path / "c.sqlite", worse))["H2"].verdict == "does not hold"


def test_prefix_tuning_hurts_and_quantized_models_recover_more(tmp_path):
    trials = [("m", None, [], {"piqa": 0.8}), (*PRUNED, {"piqa": 0.6}), (*QUANT, {"piqa": 0.6}),
              _recovered(PRUNED, "prefix", 0.5), _recovered(PRUNED, "lora", 0.64),
              _recovered(QUANT, "lora", 0.76)]  # fmt: skip
    found = _findings(_store(tmp_path / "s.sqlite", trials))
    h3, h4 = found["H3"], found["H4"]
    assert h3.verdict == "holds" and "compressed - prefix-tuned = 10.00 points" in h3.tests[0]
    assert h4.verdict == "holds", h4.tests
    assert h4.tests[0].startswith("m, lora, multiple-choice probes (accuracy): share "
                                  "quant:gptq:overall - share prune:sparsegpt:overall:0.5 = "
                                  "60.00% [")  # fmt: skip


@pytest.mark.parametrize("claim", ["H1", "H2", "H3", "H4"])
def test_claims_without_recovered_trials_say_what_they_need(tmp_path, claim):
    found = _findings(_store(tmp_path / "s.sqlite", [("m", None, [], {"piqa": 0.8})]))
    assert found[claim].verdict == "not enough data"
    assert found[claim].summary.startswith("Not measured here (needs: ")


def test_two_settings_of_one_method_are_checked_apart(tmp_path):
    base = [("m", None, [], {"piqa": 0.8}), (*PRUNED, {"piqa": 0.6})]
    wide = {**_recovery("idp", 300), "label": "idp:prompts=4"}
    trials = [*base, (*PRUNED, {"piqa": 0.7}, wide), _recovered(PRUNED, "idp", 0.6, 200),
              _recovered(PRUNED, "lora", 0.7, 5000)]  # fmt: skip
    h2 = _findings(_store(tmp_path / "s.sqlite", trials))["H2"]
    assert [t.split(": recovered IDP")[0] for t in h2.tests] == [
        "m, prune:sparsegpt:overall:0.5, idp vs lora, multiple-choice probes (accuracy)",
        "m, prune:sparsegpt:overall:0.5, idp:prompts=4 vs lora, multiple-choice probes (accuracy)",
    ]
    assert h2.verdict == "does not hold"  # the 2-prompt IDP trails LoRA by 10 points


# -- the first study's section-level claims ------------------------------------------------------
def _gpq(group: str, level: float) -> tuple[str, list[dict]]:
    recipe = f"prune:l1_unstructured:{group}:{level},quant:dynamic_int8:{group}"
    return recipe, _prune(group, level) + _quant(group)


def test_gpq_costs_more_than_gq_and_grows_with_the_level(tmp_path):
    """S2 and S3 on piqa: GQ of feed-forward drops 2 points, GPQ 20% 6, GPQ 40% 14; the second
    model's GPQ 40% loses less than its GPQ 20% (S3 does not hold there)."""
    trials = []
    for model, scores in (("m1", (0.78, 0.74, 0.66)), ("m2", (0.78, 0.70, 0.74))):
        trials += [(model, None, [], {"piqa": 0.8}),
                   (model, "quant:dynamic_int8:feed_forward", _quant("feed_forward"),
                    {"piqa": scores[0]})]  # fmt: skip
        for level, value in zip((0.2, 0.4), scores[1:], strict=True):
            trials.append((model, *_gpq("feed_forward", level), {"piqa": value}))
    found = _findings(_store(tmp_path / "s.sqlite", trials))
    s2, s3 = found["S2"], found["S3"]
    assert s2.verdict == "holds" and "holds for 2 of 2 model(s)" in s2.summary
    assert len(s2.tests) == 4  # two GPQ levels x two models, Holm over all four
    assert s2.tests[0].startswith("m1, multiple-choice probes (accuracy), dynamic_int8: drop "
                                  "GPQ 20% feed_forward (l1_unstructured) - drop GQ "
                                  "feed_forward = 4.00 points")  # fmt: skip
    assert s3.verdict == "does not hold"
    assert "m1 holds, m2 does not hold" in s3.summary
    assert "drop GPQ 40% - drop GPQ 20% feed_forward (l1_unstructured) = -4.00 points" in (
        s3.tests[1])  # fmt: skip


def test_feed_forward_pruning_against_attention_per_probe_kind(tmp_path):
    """S1: LAMA supports it, multiple choice contradicts it; never averaged together."""
    base = {"lama-trex": 0.5, "piqa": 0.8}
    trials = [("m", None, [], base)]
    for level in (0.2, 0.4):
        trials += [
            ("m", f"prune:l1_unstructured:attention:{level}", _prune("attention", level),
             {"lama-trex": 0.45, "piqa": 0.70}),
            ("m", f"prune:l1_unstructured:feed_forward:{level}", _prune("feed_forward", level),
             {"lama-trex": 0.30, "piqa": 0.78}),
        ]  # fmt: skip
    s1 = _findings(_store(tmp_path / "s.sqlite", trials))["S1"]
    assert s1.verdict == "does not hold"
    lama, mc = s1.tests
    assert lama.startswith("m, LAMA probes (P@1), l1_unstructured: drop feed_forward - drop "
                           "attention (mean over levels) = 15.00 points")  # fmt: skip
    assert "= -8.00 points" in mc
    assert "levels 20%, 40%; piqa: mean drop feed_forward 2.00, attention 10.00" in s1.evidence[1]


@pytest.mark.parametrize("claim", ["S1", "S2", "S3"])
def test_section_claims_without_their_trials_say_what_they_need(tmp_path, claim):
    found = _findings(_store(tmp_path / "s.sqlite", [("m", None, [], {"piqa": 0.8})]))
    assert found[claim].verdict == "not enough data"
    assert found[claim].summary.startswith("Not measured here (needs: ")
