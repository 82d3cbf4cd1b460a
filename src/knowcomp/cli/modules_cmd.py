"""`knowcomp modules` and `knowcomp methods`: what can be compressed, and how."""

from __future__ import annotations

import dataclasses
import json

import click
from rich.table import Table

from knowcomp.cli.format import console, err_console, human_count


@click.command()
@click.argument("model")
@click.option("--full-names", is_flag=True, help="List every layer name instead of patterns.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def modules(model: str, full_names: bool, as_json: bool) -> None:
    """Show MODEL's module groups with their layers and parameter counts.

    The first rows follow the first study's Table 3 (Overall, Attention, Feed-forward, Final
    layer, total trainable); indented rows break attention down and show linear layers outside
    the blocks, which `overall` includes.
    """
    from knowcomp.models import load_model
    from knowcomp.modules.groups import classify_linear_layers
    from knowcomp.modules.table import group_rows, summarize_names, total_trainable

    with err_console.status(f"loading {model}"):
        loaded = load_model(model)
    layers = classify_linear_layers(loaded.model, loaded.family)
    rows = group_rows(loaded.model, layers)
    total = total_trainable(loaded.model)
    if as_json:
        payload = {
            "model": model,
            "class": loaded.name,
            "family": loaded.family.value,
            "total_trainable": total,
            "groups": [dataclasses.asdict(r) for r in rows],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    config = loaded.model.config
    console.print(
        f"[bold]{model}[/]: {loaded.name} ({loaded.family.value}), "
        f"{getattr(config, 'num_hidden_layers', '?')} layers, "
        f"hidden {getattr(config, 'hidden_size', getattr(config, 'd_model', '?'))}"
    )
    table = Table()
    table.add_column("Group")
    table.add_column("Layers", justify="right")
    table.add_column("Parameters", justify="right")
    table.add_column("% of total", justify="right")
    tied = _head_is_tied(loaded.model)
    for r in rows:
        label = f"{r.label} (tied)" if r.group == "final_layer" and tied else r.label
        table.add_row(
            label,
            str(r.layers),
            f"{r.params:,}",
            f"{100 * r.share:.1f}%",
        )
    table.add_section()
    table.add_row("Total trainable", "", f"{total:,}", "100.0%")
    console.print(table)
    console.print(f"total trainable: {human_count(total)} parameters\n")
    for r in rows:
        names = list(r.names) if full_names else summarize_names(r.names)
        console.print(f"[bold]{r.label.strip()}[/]:")
        for name in names:
            console.print(f"  {name}", soft_wrap=True)
    if tied:
        console.print(
            "note: the final layer shares its weight with the input embeddings (counted once in "
            "the total); compressing final_layer unties it first"
        )
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {note}")


def _head_is_tied(model) -> bool:
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and emb is not None and head.weight is emb.weight


@click.command()
def methods() -> None:
    """List the compression methods with their options, and the module groups."""
    from knowcomp.compress.registry import METHODS, load_builtin_methods
    from knowcomp.modules.groups import GROUP_DESCRIPTIONS

    load_builtin_methods()
    table = Table(title="Compression methods", title_justify="left")
    for col in ("Method", "Kind", "Options (default)", "What it does"):
        table.add_column(col)
    for name, cls in sorted(METHODS.items()):
        opts = ", ".join(
            f"{f.name}" if f.default is dataclasses.MISSING else f"{f.name}={f.default}"
            for f in dataclasses.fields(cls)
        )
        table.add_row(name, cls.kind, opts or "-", cls.summary)
    console.print(table)
    groups = Table(title="Module groups (join with + for a union)", title_justify="left")
    groups.add_column("Group")
    groups.add_column("Layers")
    for name, text in GROUP_DESCRIPTIONS.items():
        groups.add_row(name, text)
    console.print(groups)
    console.print(
        "Recipe: kind:method:group[:level][:option=value],... e.g. "
        "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:all_linear"
    )
