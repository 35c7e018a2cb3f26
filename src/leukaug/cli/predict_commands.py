"""`leukaug predict` and `leukaug export`: use a trained arm on new images, or ship it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from leukaug.cli.conventions import choice, counted
from leukaug.trained import EXPORT_FORMATS, INPUT_DTYPES

ExportFormat = choice(EXPORT_FORMATS)
InputDtype = choice(INPUT_DTYPES)


def predict(
    arm_dir: Path = typer.Argument(
        ..., help="A trained arm's folder (arms/<arm_id>/ or a train --out)."
    ),
    inputs: list[Path] = typer.Argument(
        ...,
        help="Image files, folders (searched recursively) or CSVs with a 'path' column.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="CSV to write (path, prob, predicted, threshold). Default: the CSV on stdout.",
    ),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Average over the 8 dihedral views. Default: as the arm was evaluated.",
        show_default=False,
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """P(ALL) for new images; predicted = 1 (ALL) when P(ALL) >= the arm's operating threshold
    (chosen on its validation split). The CSV goes to --out or stdout; messages to stderr."""
    from leukaug.core import atomic
    from leukaug.trained.loader import load_trained_arm
    from leukaug.trained.predict import collect_inputs, predict_images

    console = Console(stderr=True)
    arm = load_trained_arm(arm_dir)
    card = arm.card
    paths, ignored = collect_inputs(inputs)
    for path in ignored:
        console.print(f"ignored (not an image): {path}", highlight=False, markup=False)
    console.print(
        f"arm {card.get('arm_id') or arm_dir.name}: {card['model']} at {card['image_size']} px "
        f"(card from {arm.card_source}); operating threshold {arm.threshold:.4f} "
        f"[{card['threshold_source']}]",
        highlight=False,
        markup=False,  # paths and names from the arm folder; the brackets above are text
    )
    table = predict_images(arm, paths, batch_size=batch_size, device=device, tta=tta)
    if out is None:
        typer.echo(table.to_csv(index=False), nl=False)
    else:
        atomic.write_csv(out, table)
    n_all = int(table["predicted"].sum())
    console.print(
        f"{counted(len(table), 'image')}: {n_all} predicted ALL, {len(table) - n_all} HEM"
        f" -> {out if out is not None else 'stdout'}",
        highlight=False,
        markup=False,
    )


def export(
    arm_dir: Path = typer.Argument(..., help="A trained arm's folder."),
    fmt: ExportFormat = typer.Option(
        ...,
        "--format",
        help="onnx (needs pip install 'leukaug[onnx]') or pt2 (torch.export; TorchScript was "
        "dropped: torch deprecates it).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The model file to write."),
    input_dtype: InputDtype = typer.Option(
        "uint8",
        "--input-dtype",
        help="uint8 in 0..255 or float32 in [0, 1].",
    ),
) -> None:
    """A model taking (N, H, W, 3) RGB images of any size and returning P(ALL); the resize to
    the arm's size and the normalisation are inside. Its card goes to OUT.json."""
    from leukaug.trained.export import export_arm

    result = export_arm(arm_dir, out, fmt=fmt, input_dtype=input_dtype)
    typer.echo(
        f"{result.format}: {result.path} takes (N, H, W, 3) {result.input_dtype} RGB images of "
        f"any size (padded to square and resized to {result.image_size} px inside), returns "
        f"P(ALL); max |difference| from PyTorch {result.max_abs_difference:.1e}; "
        f"card {result.card_path}"
    )


def register(app: typer.Typer) -> None:
    """Add `predict` and `export` to the main app."""
    app.command(name="predict")(predict)
    app.command(name="export")(export)
