"""`leukaug run STUDY.toml --out DIR` and `leukaug demo`: whole studies with live progress."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from leukaug.cli.progress import arm_display
from leukaug.config import read_study_file
from leukaug.layout import StudyFolder
from leukaug.study import run_study

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
    console = Console()
    config = read_study_file(study)
    started = time.perf_counter()
    with arm_display(console, study=True) as display:
        result = run_study(
            config,
            out,
            force=force,
            executor=executor,
            ray_address=ray_address,
            device=device,
            source=str(study),
            on_start=display.on_start,
            on_arm_done=display.on_arm_done,
            callbacks=display.callbacks,
        )
    minutes = (time.perf_counter() - started) / 60
    if result.report:
        report = result.report.get("report", StudyFolder(result.out_dir).report_html)
        console.print(f"Study finished in {minutes:.1f} min. Report: {report}")
    else:
        console.print(f"Study finished in {minutes:.1f} min; no arm finished, so no report.")
    if result.failed:
        names = ", ".join(o.arm_id for o in result.failed)
        console.print(
            f"[bold red]{len(result.failed)} arm(s) failed:[/] {names} (see arms/<arm>/error.json; "
            "run the same command again to retry them)."
        )
        raise typer.Exit(EXIT_ARM_FAILED)
