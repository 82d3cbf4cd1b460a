"""Pruning is exact, permanent and restorable; global scope uses one threshold."""

from __future__ import annotations

import pytest
import torch

from knowcomp.compress import CompressionSession, parse_recipe
from knowcomp.compress.selection import magnitude, threshold, zero_smallest
from knowcomp.modules.layers import float_weight_out_in
from tests.conftest import example_input


def weights_of(session, group):
    layers = session.plan(parse_recipe(f"prune:l1_unstructured:{group}:0.1"))[0].layers
    return {layer.name: float_weight_out_in(session.module(layer.name)) for layer in layers}


@pytest.mark.parametrize("model_type", ["bert", "t5", "gpt2", "llama", "opt"])
@pytest.mark.parametrize("level", [0.1, 0.37, 0.5, 0.9])
def test_global_sparsity_matches_level(tiny, model_type, level):
    session = CompressionSession(tiny(model_type))
    report = session.apply(parse_recipe(f"prune:l1_unstructured:overall:{level}"))
    assert abs(report.groups[0].sparsity - level) < 1e-3


def test_global_scope_uses_one_threshold(tiny):
    loaded = tiny("llama")
    with torch.no_grad():  # one layer with larger weights: a single cut spares it
        loaded.model.model.layers[0].mlp.up_proj.weight.mul_(4)
    session = CompressionSession(loaded)
    session.apply(parse_recipe("prune:l1_unstructured:overall:0.5"))
    weights = weights_of(session, "overall")
    # one cut for the whole group: every pruned weight was no larger than every kept weight
    originals = session._undo.weights
    pruned_max = max(originals[n].abs()[w == 0].max().item() for n, w in weights.items())
    kept_min = min(w.abs()[w != 0].min().item() for w in weights.values())
    assert pruned_max <= kept_min
    # ... so layers end with different sparsities
    per_layer = {n: (w == 0).float().mean().item() for n, w in weights.items()}
    assert per_layer["model.layers.0.mlp.up_proj"] < 0.2
    assert max(per_layer.values()) > 0.5


def test_layer_scope_gives_each_layer_the_level(tiny):
    session = CompressionSession(tiny("llama"))
    report = session.apply(parse_recipe("prune:l1_unstructured:overall:0.3:scope=layer"))
    assert abs(report.groups[0].sparsity - 0.3) < 1e-3
    for w in weights_of(session, "overall").values():
        assert abs((w == 0).float().mean().item() - 0.3) < 1 / w.numel() + 1e-9


def test_radix_threshold_equals_sorting_with_ties():
    gen = torch.Generator().manual_seed(0)
    # few distinct values, as in weights dequantized from a 4-bit GGUF file
    tensors = [torch.randint(-8, 8, (n,), generator=gen).float() * 0.01 for n in (50, 300, 7)]
    flat = torch.cat([t.abs() for t in tensors])
    for k in (1, 17, 100, 356, 357):
        key, ties = threshold(tensors, k, magnitude)
        kth = torch.sort(flat).values[k - 1]
        assert key == kth.view(torch.int32).item()
        assert ties == k - int((flat < kth).sum())
        copies = [t.clone() for t in tensors]
        zero_smallest(copies, k, magnitude)
        assert sum(int((c == 0).sum()) for c in copies) == max(k, int((flat == 0).sum()))
        kept = torch.cat([c.abs() for c in copies])
        survivors = kept[kept != 0]
        assert survivors.numel() == 0 or survivors.min() >= kth  # nothing below the cut survives


def test_pruning_is_permanent(tiny):
    loaded = tiny("gpt2")
    CompressionSession(loaded).apply(parse_recipe("prune:l1_unstructured:all_linear:0.4"))
    state = loaded.model.state_dict()
    assert not [k for k in state if k.endswith(("_orig", "_mask"))]
    assert all(not m._forward_pre_hooks for m in loaded.model.modules())
    assert not any(hasattr(m, "parametrizations") for m in loaded.model.modules())


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_structured_pruning_zeros_whole_rows(tiny, model_type):
    session = CompressionSession(tiny(model_type))
    session.apply(parse_recipe("prune:ln_structured:overall:0.25"))
    for w in weights_of(session, "overall").values():  # (out, in) views, Conv1D included
        zero_rows = (w == 0).all(dim=1)
        assert int(zero_rows.sum()) == int(0.25 * w.shape[0] + 0.5)
        assert int((w == 0).sum()) == int(zero_rows.sum()) * w.shape[1]


def test_ln_structured_removes_rows_with_smallest_norm(tiny):
    session = CompressionSession(tiny("llama"))
    session.apply(parse_recipe("prune:ln_structured:feed_forward:0.5:p=1"))
    name, w = next(iter(weights_of(session, "feed_forward").items()))
    norms = session._undo.weights[name].abs().sum(dim=1)
    removed = (w == 0).all(dim=1)
    assert norms[removed].max() <= norms[~removed].min()


def test_nm_pattern_exact(tiny):
    session = CompressionSession(tiny("llama"))
    report = session.apply(parse_recipe("prune:nm:overall:n=2:m=4"))
    assert report.groups[0].sparsity == pytest.approx(0.5, abs=1e-3)
    for w in weights_of(session, "overall").values():
        blocks = (w != 0).reshape(w.shape[0], -1, 4).sum(dim=2)
        assert bool((blocks <= 2).all())


def test_random_baselines_are_seeded(tiny):
    results = []
    for seed in (1, 1, 2):
        session = CompressionSession(tiny("llama"))
        session.apply(parse_recipe("prune:random_unstructured:attention:0.3"), seed=seed)
        results.append(torch.cat([w.flatten() for w in weights_of(session, "attention").values()]))
    assert torch.equal(results[0] == 0, results[1] == 0)
    assert not torch.equal(results[0] == 0, results[2] == 0)
    assert (results[0] == 0).float().mean().item() == pytest.approx(0.3, abs=1e-3)


def test_sweep_restores_exactly_the_touched_tensors(tiny):
    loaded = tiny("llama")
    batch = example_input(loaded)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    reference = loaded.model(**batch).logits
    session = CompressionSession(loaded)
    for level in (0.2, 0.5, 0.8):
        report = session.apply(parse_recipe(f"prune:l1_unstructured:feed_forward:{level}"))
        assert abs(report.groups[0].sparsity - level) < 1e-3  # starts from the original each time
        assert set(session._undo.weights) == {
            f"model.layers.{i}.mlp.{p}_proj" for i in range(2) for p in ("gate", "up", "down")
        }
    session.restore()
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())
    assert torch.equal(loaded.model(**batch).logits, reference)
