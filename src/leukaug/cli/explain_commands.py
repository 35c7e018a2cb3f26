"""`leukaug explain ARM_DIR INPUT... --out DIR`: where a trained arm's model looks (Grad-CAM)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from leukaug.cli.conventions import choice
from leukaug.trained import CAM_TARGETS

Target = choice(CAM_TARGETS)


def explain(
    arm_dir: Annotated[
        Path, typer.Argument(help="A trained arm's folder (arm.json, checkpoint.pt).")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the overlays and cam.csv.")],
    target: Annotated[
        Target, typer.Option("--target", help="Class to explain (predicted: each image's).")
    ] = "predicted",
    crop: Annotated[
        float | None,
        typer.Option(
            "--crop", help="Central fraction kept before resizing, as the study's data.crop."
        ),
    ] = None,
) -> None:
    """Write one Grad-CAM overlay per image and cam.csv (P(ALL), share of the CAM on the cell)."""
    from leukaug.data.regions import LOW_FOREGROUND_SHARE
    from leukaug.trained.explain import CAM_CSV, CELL_FOUND, explain_arm

    table = explain_arm(arm_dir, inputs, out, target=target, crop=crop)
    share = table["foreground_share"].mean()
    typer.echo(f"wrote {len(table)} overlays and {out / CAM_CSV}")
    missing = int((table["cell_mask"] != CELL_FOUND).sum())
    if missing:
        typer.echo(
            f"no cell found in {missing} image(s): their share is empty (see cell_mask in cam.csv)."
        )
    if math.isnan(share):
        typer.echo("no share of the CAM on the cell: no image had both a cell and a CAM.")
        return
    typer.echo(f"mean share of the CAM on the cell: {share:.2f}")
    if share < LOW_FOREGROUND_SHARE:
        typer.echo("warning: this model looks mostly at the background, not at the cell.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("explain")(explain)
