"""`leukaug studies list|show|copy`: the study files shipped inside the package.

`leukaug run NAME` runs one of them by name (`leukaug.study.packaged.resolve_study`); `studies copy NAME FILE`
starts one's own from it.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from leukaug.cli.conventions import LeukaugTyper
from leukaug.core import atomic
from leukaug.core.errors import ConfigError
from leukaug.study.packaged import packaged_studies, packaged_study

studies_app = LeukaugTyper(
    help="The study files shipped with leukaug (run one by name: leukaug run paper).",
    no_args_is_help=True,
)


def study_summary(name: str, path: Path) -> dict[str, Any]:
    """What `studies list` shows: read from the TOML only (no validation, no data)."""
    table = tomllib.loads(path.read_text(encoding="utf-8"))
    study = table.get("study", {})
    return {
        "name": name,
        "description": study.get("description", ""),
        "seeds": len(study.get("seeds", [0])),
        "models": sorted(table.get("models", {})),
        "augmentations": sorted(table.get("augmentations", {"none": []})),
        "regimes": sorted(table.get("regimes", {"full": {}})),
        "path": str(path),
    }


@studies_app.command("list")
def list_studies(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The packaged studies with their models, augmentation arms, regimes and seeds."""
    rows = [study_summary(name, path) for name, path in packaged_studies().items()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="packaged studies (leukaug run NAME --out DIR)")
    for column in ("name", "seeds", "models", "augmentations", "regimes", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            str(row["seeds"]),
            ", ".join(row["models"]),
            ", ".join(row["augmentations"]),
            ", ".join(row["regimes"]),
            row["description"],
            end_section=True,
        )
    Console(width=200).print(table)


@studies_app.command("show")
def show_study(
    name: Annotated[str, typer.Argument(help="A packaged study, e.g. paper.")],
) -> None:
    """Print a packaged study file (TOML, with its comments)."""
    typer.echo(packaged_study(name).read_text(encoding="utf-8"), nl=False)


@studies_app.command("copy")
def copy_study(
    name: Annotated[str, typer.Argument(help="A packaged study, e.g. paper.")],
    file: Annotated[Path, typer.Argument(help="The new study file to write.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
) -> None:
    """Copy a packaged study to FILE, to edit and run as one's own."""
    source = packaged_study(name)
    if file.exists() and not force:
        raise ConfigError(f"{file} already exists. Fix: choose another file or pass --force.")
    atomic.write_text(file, source.read_text(encoding="utf-8"))
    typer.echo(f"wrote {file}; run it with: leukaug run {file} --out runs/{file.stem}")


def register(app: typer.Typer) -> None:
    """Add `studies` to the main app."""
    app.add_typer(studies_app, name="studies")
