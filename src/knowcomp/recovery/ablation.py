"""IDP against its parts: the ablation of Table 3 of *Do Compressed LLMs Forget Knowledge?*.

The same trained prompts, attached four ways and scored on the same probes: each prompt alone
(as plain prompt tuning), the naive concatenation of all prompts as one longer prompt (the
later prompts' tokens attend to the earlier ones, positions run on), and IDP (one prompt chosen
per input). `ablation_rows` gives a table in the paper's layout: one row per variant, one
column per task, then the category and overall averages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from knowcomp.recovery.adapters import Adapter, IdpAdapter
from knowcomp.recovery.prefix import KVPrefix, batch_size_of, prefixed, prompts_prefix
from knowcomp.recovery.settings import RecoveryError

IDP_ROW = "IDP"


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a name and how to attach it to a model."""

    name: str
    attached: Callable[[nn.Module], AbstractContextManager]


@contextmanager
def prompt_attached(model: nn.Module, prompt: torch.Tensor) -> Iterator[nn.Module]:
    """`prompt` [length, hidden] before every input, as prompt tuning attaches one."""
    prefix: KVPrefix = prompts_prefix(model, [prompt])
    with prefixed(model, lambda kwargs: prefix.rows(batch_size_of(kwargs)), prefix.length):
        yield model


def ablation_variants(adapter: Adapter) -> list[Variant]:
    """Each prompt alone, their concatenation, then IDP itself (last)."""
    if not isinstance(adapter, IdpAdapter):
        raise RecoveryError(
            f"the ablation compares IDP with its prompts; the method here is '{adapter.method}' "
            "(use -m idp, e.g. idp:tokens=26+100)"
        )
    prompts = adapter.prompts
    out = [
        Variant(f"prompt {i + 1} alone ({p.shape[0]} tokens)", partial(prompt_attached, prompt=p))
        for i, p in enumerate(prompts)
    ]
    joined = torch.cat(prompts)
    lengths = "+".join(str(p.shape[0]) for p in prompts)
    out.append(Variant(f"concatenation ({lengths} tokens)",
                       lambda model: prompt_attached(model, joined)))  # fmt: skip
    out.append(Variant(IDP_ROW, adapter.attached))
    return out


def ablation_rows(scores: dict[str, list]) -> tuple[list[str], list[tuple[str, list]]]:
    """(columns, rows): per variant (in `scores` order), each probe's headline score, then the
    category averages that have a probe and the overall average."""
    from knowcomp.probes.categories import category_averages, headline_metric, headline_score

    first = next(iter(scores.values()))
    columns = [f"{r.probe} ({headline_metric(r)})" for r in first]
    layouts = {name: category_averages(results) for name, results in scores.items()}
    present = [c for c, average in enumerate(layouts[next(iter(scores))].categories)
               if average.present]  # fmt: skip
    columns += [f"{layouts[next(iter(scores))].categories[c].name} average" for c in present]
    columns.append("overall average")
    rows = []
    for name, results in scores.items():
        layout = layouts[name]
        cells = [headline_score(r) for r in results]
        cells += [layout.categories[c].score for c in present]
        rows.append((name, [*cells, layout.overall]))
    return columns, rows
