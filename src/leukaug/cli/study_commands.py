"""`leukaug run STUDY --out DIR` and `leukaug demo`: whole studies with live progress.

STUDY is a study file or the name of a packaged study (`leukaug studies list`); `--set`
overrides its values, `--dry-run` shows the plan instead of running it, and the run ends
with the verdicts table (or, with `--json`, a JSON summary on stdout).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from leukaug.cli.conventions import choice
from leukaug.cli.progress import arm_display
from leukaug.cli.results import preview_lines, preview_table, read_results, results_table
from leukaug.study.overrides import Flag, describe, flag_assignments
from leukaug.study.packaged import packaged_study, resolve_study
from leukaug.study.study_file import EXECUTORS, StudyConfig, read_study_file

if TYPE_CHECKING:
    from leukaug.study.jobs import ArmOutcome
    from leukaug.study.run import StudyResult

EXIT_ARM_FAILED = 1
EXIT_SIGNAL = 128  # the shell's convention: 130 after SIGINT, 143 after SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# `leukaug run`'s dedicated options: sugar for `--set KEY=VALUE` of these keys.
RUN_FLAGS = {
    "cache_dir": Flag("--cache-dir", "data.cache_dir"),
    "device": Flag("--device", "study.device"),
    "executor": Flag("--executor", "executor.kind"),
    "ray_address": Flag("--ray-address", "executor.address"),
}
DEMO_STUDY = "demo.toml"
Executor = choice(EXECUTORS)


def register(app: typer.Typer) -> None:
    """Add `run` and `demo` to the main app."""

    @app.command("run")
    def run_command(
        study: str = typer.Argument(
            ..., help="A study file (TOML), or a packaged study's name: leukaug studies list."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Study folder for results and the report."
        ),
        overrides: list[str] = typer.Option(
            [],
            "--set",
            metavar="KEY=VALUE",
            help="KEY=VALUE overriding the study file, VALUE in TOML (repeatable): "
            "--set training.epochs=3 --set seeds=[0,1].",
            show_default=False,
        ),
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Show the arms, their references, the data and the work; train nothing.",
        ),
        variance_from: Path | None = typer.Option(
            None,
            "--variance-from",
            help="With --dry-run: a pilot study folder whose variances give the detectable "
            "effect per comparison and the seeds needed.",
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the summary (or the --dry-run plan) as JSON on stdout."
        ),
        cache_dir: Path | None = typer.Option(
            None,
            "--cache-dir",
            help="Image caches and generated data (default: data.cache_dir, else the user "
            "cache folder).",
        ),
        force: bool = typer.Option(
            False, "--force", help="Replace arms whose configuration changed (else an error)."
        ),
        executor: Executor | None = typer.Option(
            None, "--executor", help="Default: the study file's [executor] kind."
        ),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="Ray cluster address (implies --executor ray)."
        ),
        device: str | None = typer.Option(
            None, "--device", help="auto, cpu, cuda, cuda:N or mps (default: the study file's)."
        ),
    ) -> None:
        """Run (or resume) every arm of a study, then write its report and show the verdicts."""
        if ray_address and executor not in (None, "ray"):
            raise typer.BadParameter("--ray-address needs --executor ray", param_hint="--executor")
        path = resolve_study(study)
        flags = [
            (RUN_FLAGS["cache_dir"], str(cache_dir.resolve()) if cache_dir else None),
            (RUN_FLAGS["device"], device),
            (RUN_FLAGS["executor"], "ray" if ray_address else executor),
            (RUN_FLAGS["ray_address"], ray_address),
        ]
        settings = [*flag_assignments(flags), *overrides]
        config = read_study_file(path, settings)
        source = " ".join([str(path), describe(settings)]).strip()
        if variance_from is not None and not dry_run:
            raise typer.BadParameter("--variance-from needs --dry-run", param_hint="--dry-run")
        if dry_run:
            show_plan(config, out, as_json=as_json, variance_from=variance_from)
            return
        run_and_report(config, out, source=source, force=force, as_json=as_json)

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Study folder."),
        force: bool = typer.Option(
            False, "--force", help="Replace arms whose configuration changed."
        ),
    ) -> None:
        """The embedded demo: synthetic data, custom CNN, no augmentation vs the paper's and stain jitter."""
        path = packaged_study(DEMO_STUDY)
        run_and_report(read_study_file(path), out, source=str(path), force=force)


def show_plan(
    config: StudyConfig, out: Path, *, as_json: bool, variance_from: Path | None = None
) -> None:
    """`--dry-run`: the arms with their references, the data, the work and the power."""
    from leukaug.study.dry_run import power_lines, preview_study

    preview = preview_study(config, out)
    power = power_lines(config, preview, variance_from)
    if as_json:
        typer.echo(json.dumps(preview.to_dict() | {"power": power}, indent=2))
        return
    console = Console()
    console.print(preview_table(preview, console.width))
    for line in [*preview_lines(preview), *power]:
        console.print(line, markup=False, highlight=False)


def run_and_report(
    config: StudyConfig, out: Path, *, source: str, force: bool = False, as_json: bool = False
) -> None:
    """Run and report one study, then show its verdicts; exit 1 if an arm failed, 130 / 143
    on SIGINT / SIGTERM (with a line saying what finished and how to resume)."""
    from leukaug.study.run import run_study

    console = Console(stderr=as_json)  # with --json, stdout carries the JSON alone
    started = time.perf_counter()
    done: list[str] = []
    try:
        with stop_on_signals(), arm_display(console, study=True) as display:

            def arm_done(outcome: ArmOutcome) -> None:
                if not outcome.failed:
                    done.append(outcome.arm_id)
                display.on_arm_done(outcome)

            result = run_study(
                config,
                out,
                force=force,
                source=source,
                on_start=display.on_start,
                on_arm_done=arm_done,
                callbacks=display.callbacks,
            )
    except Interrupted as stop:
        Console(stderr=True).print(interrupted_line(stop, out, done), markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_SIGNAL + stop.signum) from None
    minutes = (time.perf_counter() - started) / 60
    results = read_results(result.out_dir)
    if as_json:
        typer.echo(json.dumps(run_summary(config, result, results, minutes), indent=2))
    else:
        show_result(console, result, results, minutes)
    if result.failed:
        names = ", ".join(o.arm_id for o in result.failed)
        Console(stderr=True).print(
            f"[bold red]{len(result.failed)} arm(s) failed:[/] {escape(names)} "
            "(see arms/<arm>/error.json; "
            "run the same command again to retry them)."
        )
        raise typer.Exit(EXIT_ARM_FAILED)


def show_result(
    console: Console, result: StudyResult, results: list[dict[str, Any]], minutes: float
) -> None:
    """How many arms are complete, the verdicts table, and the report's path."""
    from leukaug.study.jobs import STATUS_SKIPPED

    outcomes = result.outcomes
    complete = sum(not o.failed for o in outcomes)
    counts = f"{complete} of {len(outcomes)} arms complete"
    ran = any(o.status != STATUS_SKIPPED for o in outcomes)
    if not ran:
        console.print(f"{counts}; nothing to run.", markup=False)
    if results:
        console.print(results_table(results, console.width))
    report = result.report.get("report")
    has_report = report is not None and Path(report).is_file()  # never a missing report's path
    where = f"Report: {report}" if has_report else "no arm finished, so no report."
    if ran:
        console.print(
            f"Study finished in {minutes:.1f} min: {counts}. {where}", markup=False, soft_wrap=True
        )
    else:
        console.print(where, markup=False, soft_wrap=True)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM while a study runs (a KeyboardInterrupt: no arm records it as its
    own failure, and every lock and temporary file is released on the way out)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the block (the handlers restored after)."""

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def interrupted_line(stop: Interrupted, out: Path, done: list[str]) -> str:
    """What finished before the signal, and the command that resumes."""
    from leukaug.core.layout import StudyFolder

    complete = sum(1 for arm in StudyFolder(out.resolve()).arm_folders() if arm.is_complete())
    finished = f"{len(done)} arm(s) finished in this run, " if done else ""
    command = "leukaug " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "the same command"
    return (
        f"Stopped by {signal.Signals(stop.signum).name}: {finished}{complete} arm(s) complete "
        f"in {out}; the arm that was training resumes from its last saved state. Run the same "
        f"command to resume: {command}"
    )


def run_summary(
    config: StudyConfig, result: StudyResult, results: list[dict[str, Any]], minutes: float
) -> dict[str, Any]:
    """`run --json`: where everything is, what happened to each arm, and the verdicts."""
    return {
        "study": config.study.name,
        "out_dir": str(result.out_dir),
        "report": {key: str(path) for key, path in result.report.items()},
        "minutes": round(minutes, 2),
        "primary_metric": config.study.primary_metric,
        "arms": [
            {
                "arm_id": outcome.arm_id,
                "name": outcome.name,
                "status": outcome.status,
                "seconds": round(outcome.seconds, 1),
                "error_type": outcome.error_type,
                "message": outcome.message,
            }
            for outcome in result.outcomes
        ],
        "results": results,
    }
