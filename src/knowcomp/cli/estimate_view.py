"""`knowcomp run --dry-run`: the trials, and what each will cost (`study.cost`), as a table."""

from __future__ import annotations

from rich.table import Table

from knowcomp.cli.format import console, err_console, human_bytes
from knowcomp.study.eta import format_seconds


def estimate_and_print(spec, trials, reuse_budget_mb: float | None = None) -> None:
    """Measure the pending trials of `spec` on its models and print the estimate (with a
    prefix cache of `reuse_budget_mb`, None: the default)."""
    from knowcomp.study.cost import estimate_study

    pending, done = _pending(spec, trials)
    if done:
        console.print(f"{done} trial(s) already in {spec.output}: not counted")
    if not pending:
        console.print("nothing left to run")
        return
    with err_console.status("measuring") as status:
        budget = {} if reuse_budget_mb is None else {"reuse_budget_mb": reuse_budget_mb}
        estimate = estimate_study(spec, pending, report=lambda text: status.update(text),
                                  **budget)  # fmt: skip
    table = Table(title=f"{spec.name}: estimated cost per trial (measured on this machine now)",
                  title_justify="left")  # fmt: skip
    for column, justify in (("Model", "left"), ("Trial", "left"), ("Seed", "right"),
                            ("Items", "right"), ("Tokens", "right"), ("Time", "right"),
                            ("Training", "right"), ("Peak memory", "right"),
                            ("Reuses", "left")):  # fmt: skip
        table.add_column(column, justify=justify)
    for t in estimate.trials:
        reuses = []
        if t.cached:
            reuses.append(f"cached baseline: {', '.join(t.cached)}")
        if t.reuse:
            reuses.append(f"prefix: {t.reuse}")
        recipe = t.trial.label if t.trial.recipe else "baseline (uncompressed)"
        table.add_row(t.trial.model, recipe, str(t.trial.seed), f"{t.items:,}", f"{t.tokens:,}",
                      format_seconds(t.seconds), _training(t.training),
                      human_bytes(t.peak) if t.peak else "?", "; ".join(reuses))  # fmt: skip
    console.print(table)
    loads = sum(estimate.load_seconds.values())
    items = sum(t.items for t in estimate.trials)
    tokens = sum(t.tokens for t in estimate.trials)
    peak = human_bytes(estimate.peak) if estimate.peak else "unknown"
    console.print(
        f"[bold]total[/]: {len(estimate.trials)} trial(s), {items:,} items, {tokens:,} tokens, "
        f"about {format_seconds(estimate.seconds)} ({estimate.seconds:,.0f} s; model loading "
        f"{format_seconds(loads)} "
        f"included), peak memory {peak}; measuring took "
        f"{format_seconds(estimate.measure_seconds)}",
        highlight=False,
    )
    console.print("Times are for this machine under its present load (a busy CPU slows "
                  "everything alike); tokens count padded positions read by forward passes.",
                  highlight=False)  # fmt: skip
    for note in estimate.notes:
        console.print(f"[yellow]note:[/] {note}")


def _training(training) -> str:
    """A recovered trial's training column: its steps and their time (included in Time)."""
    if training is None:
        return ""
    if not training.steps:
        return training.how
    return f"{training.steps:,} steps, {format_seconds(training.seconds)}"


def _pending(spec, trials) -> tuple[list, int]:
    """The trials the results file does not have yet (all of them when it does not exist;
    a dry run never creates it)."""
    from knowcomp.study.runner import PendingTrial, pending_trials

    if not spec.output.is_file():
        return [PendingTrial(t, list(spec.probes)) for t in trials], 0
    from knowcomp.store import ResultsStore

    with ResultsStore(spec.output) as store:
        pending = pending_trials(spec, trials, store)
    return pending, len(trials) - len(pending)
