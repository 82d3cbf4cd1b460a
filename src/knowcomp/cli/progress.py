"""The progress display of compression: a spinner while it runs, and a bar with an ETA over the
layers of each calibrated step (GPTQ, SparseGPT, Wanda), which take minutes on a CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from knowcomp.cli.format import err_console


class _IfSized(ProgressColumn):
    """A column shown only for tasks with a total (the spinner line stays a plain spinner)."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> RenderableType:
        return self.column(task) if task.total is not None else Text("")


@contextmanager
def compression_progress(
    description: str = "compressing",
) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A transient display on stderr (nothing is written when stderr is not a terminal); yields
    the factory `CompressionSession.apply(progress=...)` takes: one bar per calibrated step."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), _IfSized(BarColumn()),
        _IfSized(MofNCompleteColumn()), _IfSized(TextColumn("layers")),
        _IfSized(TimeRemainingColumn()), console=err_console, transient=True,
    ) as bar:  # fmt: skip
        main = bar.add_task(description, total=None)

        def layers(step: str, total: int) -> Callable[[int], None]:
            bar.update(main, visible=False)
            task = bar.add_task(f"{description}: {step}", total=total)
            return lambda n: bar.advance(task, n)

        yield layers


@contextmanager
def work_progress(label: str = "") -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A transient display on stderr for a pipeline's work: one bar per probe (items) or
    training run (tokens), each named `label` + its description, with an ETA; yields the
    factory `Pipeline.evaluate(progress=...)` takes."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err_console, transient=True,
    ) as bar:  # fmt: skip

        def start(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(f"{label}{description}", total=total)
            return lambda n: bar.advance(task, n)

        yield start


class RichDisplay:
    """The CLI's `pipeline.Display`: transient rich bars on stderr, one display at a time."""

    def work(self, label: str = ""):
        return work_progress(label)

    def compression(self):
        return compression_progress()

    @contextmanager
    def training(self, description: str, tokens: int) -> Iterator[Callable[[int, float], None]]:
        with Progress(
            TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} tokens"),
            TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
            console=err_console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task(description, total=tokens, loss="-")
            yield lambda n, loss: bar.update(task, advance=n, loss=f"{loss:.3f}")
