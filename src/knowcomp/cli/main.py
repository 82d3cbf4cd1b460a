"""Entry point: one click group, each sub-command in its own module."""

from __future__ import annotations

import sys

import click

from knowcomp import __version__
from knowcomp.errors import KnowcompError


class _Group(click.Group):
    """A click group that turns `KnowcompError`, and click's own usage errors (an unknown
    option, a bad option value), into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except KnowcompError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except click.UsageError as err:  # click prints usage, a hint and the error: 3 lines
            command = err.ctx.command_path if err.ctx is not None else "knowcomp"
            message = " ".join(err.format_message().split()).rstrip(".")
            click.echo(f"error: {message}; see `{command} --help`", err=True)
            sys.exit(2)
        except KeyboardInterrupt as err:  # a command may say what it kept: KeyboardInterrupt(msg)
            click.echo(f"interrupted: {err}" if str(err) else "interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="knowcomp")
def cli() -> None:
    """knowcomp: how much of a language model's knowledge survives compression.

    MODEL arguments accept a Hugging Face id, a local folder, a .gguf file, a folder written
    by `knowcomp compress`, or a short name (smollm2-135m, minilm-l6).
    """


def _register() -> None:
    from knowcomp.cli import compress_cmd, data_cmd, eval_cmd, modules_cmd, results_cmd, run_cmd

    cli.add_command(modules_cmd.modules)
    cli.add_command(modules_cmd.methods)
    cli.add_command(compress_cmd.compress)
    cli.add_command(data_cmd.data)
    cli.add_command(eval_cmd.eval_)
    cli.add_command(eval_cmd.probes_)
    cli.add_command(run_cmd.run)
    cli.add_command(results_cmd.results)
    from knowcomp.cli import recover_cmd, report_cmd

    cli.add_command(report_cmd.report)
    cli.add_command(recover_cmd.recover)

    from knowcomp.cli import similarity_cmd

    cli.add_command(similarity_cmd.similarity)

    from knowcomp.cli import plan_cmd

    cli.add_command(plan_cmd.plan)

    from knowcomp.cli import cache_cmd

    cli.add_command(cache_cmd.cache)


_register()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
