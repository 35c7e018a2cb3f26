"""`leukaug run STUDY --out DIR` and `leukaug demo`: whole studies with live progress.

STUDY is a study file or the name of a packaged study (`leukaug studies list`); `--set`
overrides its values, `--dry-run` shows the plan instead of running it, and the run ends
with the verdicts table (or, with `--json`, a JSON summary on stdout).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from leukaug.cli.conventions import choice
from leukaug.cli.progress import arm_display
from leukaug.cli.results import preview_lines, preview_table, read_results, results_table
from leukaug.study.overrides import describe
from leukaug.study.packaged import packaged_study, resolve_study
from leukaug.study.study_file import EXECUTORS, StudyConfig, read_study_file

if TYPE_CHECKING:
    from leukaug.study.run import StudyResult

EXIT_ARM_FAILED = 1
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
        config = with_cache_dir(read_study_file(path, overrides), cache_dir)
        source = " ".join([str(path), describe(overrides)]).strip()
        if variance_from is not None and not dry_run:
            raise typer.BadParameter("--variance-from needs --dry-run", param_hint="--dry-run")
        if dry_run:
            show_plan(config, out, as_json=as_json, variance_from=variance_from)
            return
        run_and_report(
            config,
            out,
            source=source,
            force=force,
            executor="ray" if ray_address else executor,
            ray_address=ray_address,
            device=device,
            as_json=as_json,
        )

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


def with_cache_dir(config: StudyConfig, cache_dir: Path | None) -> StudyConfig:
    """`--cache-dir` in place of the study's data.cache_dir."""
    if cache_dir is None:
        return config
    data = config.data.model_copy(update={"cache_dir": str(cache_dir.resolve())})
    return config.model_copy(update={"data": data})


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
    console.print(preview_table(preview))
    for line in [*preview_lines(preview), *power]:
        console.print(line, markup=False, highlight=False)


def run_and_report(
    config: StudyConfig,
    out: Path,
    *,
    source: str,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    device: str | None = None,
    as_json: bool = False,
) -> None:
    """Run and report one study, then show its verdicts; exit 1 if an arm failed."""
    from leukaug.study.run import run_study

    console = Console(stderr=as_json)  # with --json, stdout carries the JSON alone
    started = time.perf_counter()
    with arm_display(console, study=True) as display:
        result = run_study(
            config,
            out,
            force=force,
            executor=executor,
            ray_address=ray_address,
            device=device,
            source=source,
            on_start=display.on_start,
            on_arm_done=display.on_arm_done,
            callbacks=display.callbacks,
        )
    minutes = (time.perf_counter() - started) / 60
    results = read_results(result.out_dir)
    if as_json:
        typer.echo(json.dumps(run_summary(config, result, results, minutes), indent=2))
    else:
        if results:
            console.print(results_table(results))
        report = result.report.get("report")
        if report is not None and Path(report).is_file():  # never a path to a missing report
            console.print(f"Study finished in {minutes:.1f} min. Report: {report}", markup=False)
        else:
            console.print(f"Study finished in {minutes:.1f} min; no arm finished, so no report.")
    if result.failed:
        names = ", ".join(o.arm_id for o in result.failed)
        Console(stderr=True).print(
            f"[bold red]{len(result.failed)} arm(s) failed:[/] {escape(names)} "
            "(see arms/<arm>/error.json; "
            "run the same command again to retry them)."
        )
        raise typer.Exit(EXIT_ARM_FAILED)


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
