"""`knowcomp run`: a whole study (a YAML spec or a preset), resumable, local or on Ray."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from knowcomp.cli.format import console, err_console
from knowcomp.cli.options import add_bos_option, placement_options, precision_option
from knowcomp.errors import KnowcompError
from knowcomp.study.eta import StudyClock, format_seconds, planned_items


@click.command("run")
@click.argument("spec_file", metavar="[STUDY.yaml]", required=False,
                type=click.Path(path_type=Path))  # fmt: skip
@click.option("--preset", help="A built-in study instead of a YAML file (see --list-presets).")
@click.option("--model", "-m", "models", multiple=True,
              help="Model(s) to study, replacing the spec's. Repeat for several.")  # fmt: skip
@click.option("--probes", "-p", help="Comma-separated probes; replaces the spec's probes.")
@click.option("--limit", type=click.IntRange(min=1), help="Items per relation (LAMA) or task.")
@click.option("--seeds", help="Comma-separated seeds, e.g. 0,1,2; replaces the spec's seeds.")
@click.option("--recovery-tokens", type=click.IntRange(min=2),
              help="Training token budget of each recover step; replaces the spec's.")  # fmt: skip
@click.option(
    "--lama-protocol",
    type=click.Choice(["templates", "cost-of-compression"]),
    default=None,
    help="LAMA protocol: templates (LAMA's: relation templates, the object's token rank, "
    "several-token objects left out; the default) or cost-of-compression (the first study's: "
    "first masked evidence sentence, deduplicated, string match of the top token, "
    "several-token objects counted wrong, micro top-1). Results of the latter are named "
    "PROBE@cost-of-compression. Replaces the spec's.",
)
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Results file (SQLite); rerunning on it skips finished trials.")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory to read.")
@add_bos_option
@placement_options(spec=True)
@precision_option
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Run trials here, or as Ray tasks.")  # fmt: skip
@click.option("--ray-address", help="Ray cluster to join (default: start a local one).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ray: workers (model copies) per model.")  # fmt: skip
@click.option("--reuse-memory", type=click.FloatRange(min=0), default=1024,  # reuse's default
              show_default=True, metavar="MB",
              help="Memory for the baseline's states that final-layer trials (and decoder-only "
              "trials of encoder-decoders) start from instead of rerunning the network; over it, "
              "they run in full with a note. 0: off.")  # fmt: skip
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write the report folder next to the results file at the end.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Validate and list the trials, and estimate what "
              "each will cost (items, tokens, time, memory) from a few measured batches of "
              "each probe on the actual model; run nothing.")  # fmt: skip
@click.option("--estimate/--no-estimate", default=True, show_default=True,
              help="With --dry-run: measure and estimate the cost (loads the models).")  # fmt: skip
@click.option("--list-presets", is_flag=True, help="List the built-in studies and exit.")
def run(
    spec_file: Path | None,
    preset: str | None,
    models: tuple[str, ...],
    probes: str | None,
    limit: int | None,
    seeds: str | None,
    recovery_tokens: int | None,
    lama_protocol: str | None,
    out: Path | None,
    data_dir: Path | None,
    add_bos: str | None,
    precision: float | None,
    executor: str,
    ray_address: str | None,
    workers: int,
    reuse_memory: float,
    report: bool,
    dry_run: bool,
    estimate: bool,
    list_presets: bool,
    device: str | None,
    dtype: str | None,
    device_map: str | None,
) -> None:
    """Run a compression study: every model x recipe x level x seed, every probe, one results
    file. Finished trials are kept; rerun the same command to resume after a crash.

    \b
    Examples:
      knowcomp run --preset quickstart
      knowcomp run --preset global-pruning --model smollm2-135m --probes lama-trex,piqa --limit 50
      knowcomp run --preset forget-recover --model smollm2-135m --limit 50
      knowcomp run my-study.yaml --executor ray
    """
    from knowcomp.study import run_study
    from knowcomp.study.trials import validate

    if list_presets:
        _print_presets()
        return
    spec = _build_spec(spec_file, preset, models, probes, limit, seeds, out, data_dir,
                       recovery_tokens, lama_protocol, add_bos)  # fmt: skip
    spec = spec.with_overrides(device=device, dtype=dtype, device_map=device_map)
    spec = spec.with_overrides(precision=precision)
    if dry_run:
        trials = validate(spec)
        console.print(f"{spec.name}: {len(trials)} trials x {len(spec.probes)} probes "
                      f"-> {spec.output}")  # fmt: skip
        for t in trials if not estimate else ():  # the estimate's table lists them too
            recover = f" + {t.method}" if t.recover else ""
            console.print(
                f"  {t.model}  {t.sweep:<28} seed {t.seed:<3} {t.recipe or '(uncompressed)'}"
                f"{recover}"
            )
        if estimate:
            from knowcomp.cli.estimate_view import estimate_and_print

            estimate_and_print(spec, trials, reuse_memory)
        return
    try:
        with _ProgressListener(spec.data_dir) as listener:
            summary = run_study(spec, executor=executor, listener=listener,
                                ray_address=ray_address, workers_per_model=workers,
                                reuse_budget_mb=reuse_memory)  # fmt: skip
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"finished trials are kept in {spec.output}; rerun the same "
                                "command to resume") from None  # fmt: skip
    console.print(
        f"{summary.ran} trial(s) run, {summary.skipped} already in {summary.output} "
        f"({summary.rows_added} result rows added, {summary.seconds:.0f} s)"
    )
    if spec.precision is not None and summary.ran:
        console.print(f"† adaptive (--precision {spec.precision:g}): the drop's 95% confidence "
                      "sequence on the items used, valid where scoring stopped on it",
                      highlight=False)  # fmt: skip
    if summary.stored_by_others:
        console.print(f"{summary.stored_by_others} trial(s) computed and stored by another run "
                      "writing the same file")  # fmt: skip
    for holder, count in summary.left_to_others.items():
        console.print(
            f"{count} trial(s) not finished by another run writing the same file ({holder}); "
            "rerun this command to compute what it did not finish"
        )
    if report:
        _write_report(spec.output)


def _build_spec(spec_file, preset, models, probes, limit, seeds, out, data_dir,
                recovery_tokens=None, lama_protocol=None, add_bos=None):  # fmt: skip
    from knowcomp.study import load_spec, preset_spec

    if spec_file is not None and preset is not None:
        raise KnowcompError("a STUDY.yaml and --preset were both given; give one of them")
    if spec_file is None and preset is None:
        raise KnowcompError(
            "nothing to run; give a STUDY.yaml or --preset (e.g. knowcomp run --preset quickstart)"
        )
    spec = load_spec(spec_file) if spec_file is not None else preset_spec(preset, models)
    overrides: dict = {"models": models or None, "limit": limit, "output": out,
                       "data_dir": data_dir, "lama_protocol": lama_protocol,
                       "add_bos": add_bos}  # fmt: skip
    if probes is not None:
        overrides["probes"] = tuple(p.strip() for p in probes.split(",") if p.strip())
        if not overrides["probes"]:
            raise KnowcompError("--probes is empty; give probes, e.g. --probes lama-trex,piqa")
    if seeds is not None:
        overrides["seeds"] = _seed_list(seeds)
    if recovery_tokens is not None:
        from dataclasses import replace

        overrides["recovery"] = replace(spec.recovery, tokens=recovery_tokens)
    return spec.with_overrides(**overrides)


def _seed_list(text: str) -> tuple[int, ...]:
    """`--seeds 0,1,2`: ASCII integers (Python's `int` also takes full-width digits), each once."""
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
        raise KnowcompError(f"--seeds '{text}' must be integers; write e.g. --seeds 0,1,2")
    seeds = tuple(int(p) for p in parts)
    if len(set(seeds)) != len(seeds):
        raise KnowcompError(f"--seeds '{text}' repeats a seed; give each once")
    return seeds


def _write_report(db: Path) -> None:
    try:
        from knowcomp.report import write_report
    except ImportError:
        return
    folder = db.with_name(db.stem + "-report")
    with err_console.status("writing the report"):
        html = write_report(db, folder)
    console.print(f"report: {html}")


def _print_presets() -> None:
    from rich.table import Table

    from knowcomp.study import PRESETS, preset_spec
    from knowcomp.study.trials import expand

    table = Table(title="Built-in studies (knowcomp run --preset NAME --model MODEL)",
                  title_justify="left")  # fmt: skip
    for column in ("Preset", "Sweeps", "Trials per model", "What it runs"):
        table.add_column(column)
    for name, preset in PRESETS.items():
        spec = preset_spec(name, (preset.model or "MODEL",))
        table.add_row(name, str(len(preset.sweeps)), str(len(expand(spec))), preset.summary)
    console.print(table)


class _StudyEta(TimeRemainingColumn):
    """The study's time left from its `StudyClock` (items scored, all trials); a probe's
    own bar keeps rich's estimate."""

    def render(self, task):
        eta = task.fields.get("eta")
        if eta is None:
            return super().render(task)
        return Text(eta, style="progress.remaining")


class _ProgressListener:
    """A study bar (trials done / left, items scored, and the whole study's ETA) over a bar
    for the probe being scored."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.bar = Progress(
            TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), _StudyEta(),
            console=err_console, transient=True,
        )  # fmt: skip
        self.data_dir = data_dir
        self.clock: StudyClock | None = None
        self.trials: TaskID | None = None
        self.probe: TaskID | None = None
        self.started_at = time.perf_counter()
        self.baselines: dict[tuple, dict[str, dict]] = {}  # setting -> probe -> result

    def __enter__(self) -> _ProgressListener:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def started(self, pending, skipped: int) -> None:
        if skipped:
            console.print(f"{skipped} trial(s) already in the results file; skipping them")
        self.clock = StudyClock(planned_items(pending, self.data_dir))
        self.trials = self.bar.add_task("study", total=self.clock.total, eta="-")
        self._show()

    def _show(self, label: str | None = None) -> None:
        """The study bar: `trial 4/64: <label>`, items scored of planned, the study's ETA."""
        clock = self.clock
        if clock is None or self.trials is None:
            return
        eta = clock.eta()
        fields = {"completed": clock.done, "total": max(clock.total, 1),
                  "eta": "-" if eta is None else format_seconds(eta)}  # fmt: skip
        if label is not None:
            number = min(clock.trials_done + 1, clock.trials)
            fields["description"] = f"trial {number}/{clock.trials}: {label}"
        self.bar.update(self.trials, **fields)

    def model_loading(self, model: str) -> None:
        self._show(f"loading {model}")

    def trial_started(self, trial) -> None:
        if self.clock is not None:
            self.clock.start_trial(trial.key)
        self._show(f"{trial.label} (seed {trial.seed})")

    def probe_started(self, probe: str, total: int):
        if self.probe is not None:
            self.bar.remove_task(self.probe)
        self.probe = self.bar.add_task(f"  {probe}", total=total)

        def advance(n: int, task=self.probe) -> None:
            self.bar.advance(task, n)
            if self.clock is not None:
                self.clock.advance(n)
            self._show()

        return advance

    def trial_left(self, trial, holder: str) -> None:
        if self.clock is not None:
            self.clock.leave_trial(trial.key)
        self._show()

    def trial_finished(self, trial, outcome) -> None:
        if self.probe is not None:
            self.bar.remove_task(self.probe)
            self.probe = None
        if self.clock is not None:
            self.clock.finish_trial(trial.key)
        self._show()
        setting = tuple(outcome.trial.get(k) for k in ("model", "seed", "limit_items",
                                                       "lama_mode", "dtype"))  # fmt: skip
        if outcome.trial.get("recipe") is None:
            self.baselines[setting] = {r["probe"]: r for r in outcome.results}
        base = self.baselines.get(setting, {}) if outcome.trial.get("recipe") else {}
        scores = ", ".join(_scored(r, base.get(r["probe"])) for r in outcome.results)
        console.print(f"[green]done[/] {trial.label} seed {trial.seed}: {scores}",
                      highlight=False)  # fmt: skip
        recovery = outcome.trial.get("recovery")
        if recovery:
            log = recovery["log"]
            how = f"{log['tokens']:,} tokens, {log['steps']} steps, {log['seconds']:.0f} s"
            if recovery["reused"]:
                how = f"adapter reused from {recovery['adapter']} ({how})"
            console.print(f"     {recovery['trainable_params']:,} trainable parameters; {how}; "
                          f"loss {log['first_loss']:.3f} -> {log['last_loss']:.3f}")  # fmt: skip


def _scored(result: dict, baseline: dict | None) -> str:
    """`piqa 0.600`, and against a baseline run in this session, its paired drop; an adaptive
    result (`--precision`) its stored drop, with its confidence sequence and items used."""
    from knowcomp.analysis.compare import describe_drop, headline_drop

    text = f"{result['probe']} {_headline(result['metrics']):.3f}"
    sequential = result.get("sequential")
    if sequential is not None:
        d = sequential.get("drop")
        if d is None:  # a baseline, scored as far as its trials need
            return f"{text} ({sequential['share']:.0%} of its items so far)"
        return (f"{text} (drop {d['value']:.1f} [{d['low']:.1f}, {d['high']:.1f}]† points on "
                f"{d['items']} of {sequential['pool']} items, {sequential['stop']})")  # fmt: skip
    drop = describe_drop(headline_drop(baseline, result)) if baseline else ""
    return f"{text} ({drop})" if drop else text


def _headline(metrics: dict) -> float:
    from knowcomp.probes.categories import headline_name

    name = headline_name(metrics)
    return float(metrics[name]) if name else float("nan")
