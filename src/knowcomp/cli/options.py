"""Options that several commands share, declared once."""

from __future__ import annotations

import click

add_bos_option = click.option(
    "--add-bos",
    type=click.Choice(["auto", "true", "false"]),
    default=None,
    help="A BOS token first in a decoder's inputs: auto (where its tokenizer adds one by "
    "default, as lm-evaluation-harness does; the default), true or false.",
)
