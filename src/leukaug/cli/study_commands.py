"""`leukaug run STUDY.toml --out DIR` and `leukaug demo`: whole studies with live progress."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

EXIT_ARM_FAILED = 1
DEMO_STUDY = "demo.toml"


def packaged_study(name: str) -> Path:
    """Path of a study file shipped inside the package (`leukaug/studies/`)."""
    return Path(str(resources.files("leukaug") / "studies" / name))


def register(app: typer.Typer) -> None:
    """Add `run` and `demo` to the main app."""

    @app.command("run")
    def run_command(
        study: Path = typer.Argument(..., help="The study file (TOML), e.g. studies/paper.toml."),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Study folder for results and the report."
        ),
        force: bool = typer.Option(
            False, "--force", help="Replace arms whose configuration changed (else an error)."
        ),
        executor: str | None = typer.Option(
            None, "--executor", help="local or ray (default: the study file's [executor] kind)."
        ),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="Ray cluster address (implies --executor ray)."
        ),
        device: str | None = typer.Option(
            None, "--device", help="auto, cpu, cuda, cuda:N or mps (default: the study file's)."
        ),
    ) -> None:
        """Run (or resume) every arm of a study, then write its report."""
        if ray_address and executor not in (None, "ray"):
            raise typer.BadParameter("--ray-address needs --executor ray", param_hint="--executor")
        run_and_report(
            study,
            out,
            force=force,
            executor="ray" if ray_address else executor,
            ray_address=ray_address,
            device=device,
        )

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Study folder."),
        force: bool = typer.Option(
            False, "--force", help="Replace arms whose configuration changed."
        ),
    ) -> None:
        """The embedded demo: synthetic data, custom CNN, no augmentation vs the paper's and stain jitter."""
        run_and_report(packaged_study(DEMO_STUDY), out, force=force)


def run_and_report(
    study: Path,
    out: Path,
    *,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    device: str | None = None,
) -> None:
    """Load, run and report one study, printing a line per finished arm; exit 1 if an arm failed."""
    from leukaug.config import load_study
    from leukaug.study import run_study

    console = Console()
    config = load_study(study)
    started = time.perf_counter()
    with study_progress(console) as (arms_bar, training_bar):
        arms_task = arms_bar.add_task("arms", total=None)

        def on_arm_done(outcome) -> None:
            arms_bar.advance(arms_task)
            console.print(arm_summary(outcome), highlight=False)

        def on_start(total: int) -> None:
            arms_bar.update(arms_task, total=total)

        result = run_study(
            config,
            out,
            force=force,
            executor=executor,
            ray_address=ray_address,
            device=device,
            source=str(study),
            console=console,
            progress=training_bar,
            on_arm_done=on_arm_done,
            on_start=on_start,
        )
    minutes = (time.perf_counter() - started) / 60
    report = result.report.get("report.html") or result.report.get("html") or out / "report.html"
    console.print(f"Study finished in {minutes:.1f} min. Report: {report}")
    if result.failed:
        names = ", ".join(o.arm_id for o in result.failed)
        console.print(
            f"[bold red]{len(result.failed)} arm(s) failed:[/] {names} (see arms/<arm>/error.json; "
            "run the same command again to retry them)."
        )
        raise typer.Exit(EXIT_ARM_FAILED)


@contextlib.contextmanager
def study_progress(console: Console) -> Iterator[tuple[Progress, Progress]]:
    """Two live progress displays: arms done (with the study's ETA) and the current training."""
    from leukaug.progress import training_progress

    arms_bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    training_bar = training_progress(console)
    with Live(Group(arms_bar, training_bar), console=console, refresh_per_second=4, transient=True):
        yield arms_bar, training_bar


def arm_summary(outcome) -> str:
    """One line per finished arm: test accuracy with its interval, AUC, and time."""
    if outcome.failed:
        return f"[red]FAILED[/] {outcome.arm_id}: {outcome.error_type}: {outcome.message}"
    test = (outcome.metrics.get("splits") or {}).get("test") or {}
    parts = [f"{'skipped (done)' if outcome.status == 'skipped' else 'done'} {outcome.arm_id}"]
    if test.get("accuracy") is not None:
        interval = ""
        if test.get("accuracy_ci_low") is not None:
            interval = f" [{test['accuracy_ci_low']:.3f}, {test['accuracy_ci_high']:.3f}]"
        parts.append(f"test acc {test['accuracy']:.3f}{interval}")
    if test.get("auc") is not None:
        parts.append(f"AUC {test['auc']:.3f}")
    if outcome.status != "skipped":
        parts.append(f"{outcome.seconds:.0f} s")
    return "  ".join(parts)
