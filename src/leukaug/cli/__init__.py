"""The `leukaug` command. Thin: parses options, calls library functions, reports errors.

Every `LeukaugError` (bad data, bad config, missing weights) becomes a one-paragraph
message on stderr and exit status 2. Command groups live in the sibling modules.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from leukaug.cli import (
    data_commands,
    explain_commands,
    model_commands,
    predict_commands,
    report_commands,
    study_commands,
    train_commands,
)
from leukaug.errors import LeukaugError

app = typer.Typer(
    name="leukaug",
    help="Augmentation studies for ALL-vs-HEM white-blood-cell image classification (C-NMC 2019).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (
    data_commands,
    model_commands,
    train_commands,
    report_commands,
    study_commands,
    predict_commands,
    explain_commands,
):
    module.register(app)

EXIT_USAGE = 2


@app.callback()
def _root() -> None:
    """Augmentation studies for ALL-vs-HEM white-blood-cell image classification (C-NMC 2019)."""


@app.command()
def version() -> None:
    """Print the leukaug version and the versions of its key dependencies."""
    import torch

    from leukaug import __version__

    typer.echo(f"leukaug {__version__} (torch {torch.__version__})")


def main() -> None:
    """Console-script entry point: run the app, turning user errors into exit status 2."""
    try:
        app()
    except LeukaugError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
