"""`leukaug report RUN_DIR`: metrics, comparisons, figures and the HTML/Markdown report of a study."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    run_dir: Path = typer.Argument(..., help="A study folder (holding arms/*/predictions.csv)."),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="Reference augmentation: each arm is compared with its twin that has it (default: the study's "
        "baseline, else no augmentation); an arm name is read as its augmentation.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstraps."),
) -> None:
    """Write report.html, summary.md, metrics.csv, comparisons.csv and verdicts.csv into RUN_DIR."""
    from leukaug.report import build_report
    from leukaug.report.markdown import read_headline

    paths = build_report(run_dir, baseline=baseline, seed=seed)
    typer.echo(f"Report: {paths['report']}")
    typer.echo(
        f"Summary: {paths['summary']}  Metrics: {paths['metrics']}  Verdicts: {paths['verdicts']}"
    )
    headline = read_headline(paths["summary"])
    if headline:
        typer.echo("")
        typer.echo(headline)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command(name="report")(report)
