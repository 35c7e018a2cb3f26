"""The `leukaug` command. Thin: parses options, calls library functions, reports errors.

Every `LeukaugError` (bad data, bad config, missing weights) becomes a one-paragraph
message on stderr and exit status 2. Command groups live in the sibling modules, which
import torch and the other heavy libraries inside the commands that need them: building
the app (`leukaug -h`, `leukaug COMMAND -h`, `--version`) imports no torch
(`benchmarks/cli_startup.py` measures every command's start).
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import platform
import sys
from importlib import metadata
from pathlib import Path
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


def torch_build() -> tuple[str, str | None]:
    """PyTorch's version and the CUDA version it was built for (None: a CPU build), read
    from the installed `torch/version.py` without importing torch (seconds saved)."""
    spec = importlib.util.find_spec("torch")
    folders = spec.submodule_search_locations if spec is not None else None
    if not folders:
        raise LeukaugError("PyTorch is not installed: pip install leukaug installs it.")
    values: dict[str, ast.expr] = {}
    for node in ast.parse((Path(folders[0]) / "version.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            values[node.target.id] = node.value
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = node.value
    return ast.literal_eval(values["__version__"]), ast.literal_eval(values["cuda"])


def version_text(*, devices: bool = False) -> str:
    """leukaug and the versions its results depend on: Python, PyTorch (with the CUDA it
    was built for), torchvision, kornia. The GPUs PyTorch sees cannot be known without
    importing torch and initialising CUDA (seconds), so only `devices=True` counts them."""
    from leukaug import __version__

    version, cuda = torch_build()
    build = f"CUDA {cuda}" if cuda else "CUDA none (CPU build)"
    if devices:
        import torch

        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        build += f"; {available} GPU(s) available"
    else:
        build += "; GPUs: see leukaug version"
    lines = [f"leukaug {__version__}", f"python {platform.python_version()}"]
    lines.append(f"torch {version} ({build})")
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
            help="Print the versions of leukaug, torch, torchvision, kornia and CUDA, and exit "
            "(fast: imports no torch).",
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
    """Print the versions (as --version) and the GPUs PyTorch sees (this imports torch)."""
    typer.echo(version_text(devices=True))


def main() -> None:
    """Console-script entry point: run the app, turning user errors into exit status 2."""
    try:
        app()
    except LeukaugError as error:
        Console(stderr=True).print(
            f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True
        )
        sys.exit(EXIT_USAGE)
