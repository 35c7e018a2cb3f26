"""The `leukaug` command. Thin: parses options, calls library functions, reports errors.

Every `LeukaugError` (bad data, bad config, missing weights) becomes a one-paragraph
message on stderr and exit status 2. Command groups live in the sibling modules.
"""

from __future__ import annotations

import logging
import platform
import sys
from importlib import metadata
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from leukaug.cli import (
    data_commands,
    explain_commands,
    model_commands,
    predict_commands,
    progress,
    report_commands,
    studies_commands,
    study_commands,
    train_commands,
)
from leukaug.cli.conventions import LeukaugTyper
from leukaug.core.errors import LeukaugError

app = LeukaugTyper(
    name="leukaug",
    help="Augmentation studies for ALL-vs-HEM white-blood-cell image classification (C-NMC 2019).",
    no_args_is_help=True,
    add_completion=True,
)

for module in (
    data_commands,
    model_commands,
    train_commands,
    report_commands,
    study_commands,
    studies_commands,
    predict_commands,
    explain_commands,
):
    module.register(app)

EXIT_USAGE = 2


def version_text() -> str:
    """leukaug and the versions its results depend on: Python, PyTorch (with CUDA),
    torchvision, kornia."""
    import torch

    from leukaug import __version__

    cuda = torch.version.cuda or "none (CPU build)"
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    lines = [
        f"leukaug {__version__}",
        f"python {platform.python_version()}",
        f"torch {torch.__version__} (CUDA {cuda}; {available} GPU(s) available)",
    ]
    lines += [f"{name} {metadata.version(name)}" for name in ("torchvision", "kornia")]
    return "\n".join(lines)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of leukaug, torch, torchvision, kornia and CUDA, and exit.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="More detail, Ray's own logs included."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings, errors and results.")
    ] = False,
) -> None:
    """Augmentation studies for ALL-vs-HEM white-blood-cell image classification (C-NMC 2019)."""
    if verbose and quiet:
        raise typer.BadParameter("use -v or -q, not both", param_hint="-v/-q")
    progress.set_log_level(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


@app.command()
def version() -> None:
    """Print the versions of leukaug, torch, torchvision, kornia and CUDA (as --version)."""
    typer.echo(version_text())


def main() -> None:
    """Console-script entry point: run the app, turning user errors into exit status 2."""
    try:
        app()
    except LeukaugError as error:
        Console(stderr=True).print(
            f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True
        )
        sys.exit(EXIT_USAGE)
