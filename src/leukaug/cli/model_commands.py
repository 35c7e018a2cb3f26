"""`leukaug models`, `leukaug augmentations`, `leukaug augment preview`, `leukaug weights fetch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leukaug.cli.conventions import LeukaugTyper

augment_app = LeukaugTyper(help="Look at augmentations.", no_args_is_help=True)
weights_app = LeukaugTyper(help="Pretrained (ImageNet) weights.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def models(as_json: JsonFlag = False) -> None:
    """List the registered models with input size, normalisation and parameter counts."""
    from leukaug.models import list_models, model_info, model_parameter_count

    if as_json:
        rows = []
        for name in list_models():
            info = model_info(name)
            rows.append(
                {
                    "name": name,
                    "input_size": info.input_size,
                    "min_input_size": info.min_input_size,
                    "mean": list(info.mean),
                    "std": list(info.std),
                    "heads": list(info.heads),
                    "parameters": model_parameter_count(name),
                    "imagenet_weights": info.imagenet_weights,
                    "description": info.description,
                }
            )
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="models (input: float RGB in [0, 1], then (x - mean) / std)")
    table.caption = (
        "Any timm model also works as timm:NAME (e.g. timm:efficientnet_b0, "
        "timm:convnext_tiny.fb_in1k): input size and mean/std from timm's pretrained config, "
        "weights from the Hugging Face cache (`leukaug weights fetch timm:NAME`); freeze_first "
        "counts its top-level stages (stem first) as timm groups them."
    )
    for column in (
        "name",
        "input px",
        "mean",
        "std",
        "params (linear head)",
        "params (seed head)",
        "ImageNet weights",
        "freeze_first counts",
        "description",
    ):
        table.add_column(column)
    for name in list_models():
        info = model_info(name)
        seed = f"{model_parameter_count(name, head='seed'):,}" if "seed" in info.heads else "-"
        table.add_row(
            name,
            f"{info.input_size} (min {info.min_input_size})",
            ", ".join(f"{v:g}" for v in info.mean),
            ", ".join(f"{v:g}" for v in info.std),
            f"{model_parameter_count(name):,}",
            seed,
            info.imagenet_weights or "-",
            info.freeze_first_units or "- (use freeze_backbone)",
            info.description,
        )
    Console(width=200).print(table)


def augmentations(as_json: JsonFlag = False) -> None:
    """List the registered augmentations with their default parameters."""
    from leukaug.augment import AUGMENTATIONS, DEFAULT_P, list_augmentations

    if as_json:
        rows = [
            {
                "name": name,
                "defaults": AUGMENTATIONS.get(name).defaults,
                "description": AUGMENTATIONS.get(name).description,
            }
            for name in list_augmentations()
        ]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(
        title=f"augmentations (each image replaced with probability p, default {DEFAULT_P})"
    )
    for column in ("name", "defaults", "description"):
        table.add_column(column)
    for name in list_augmentations():
        entry = AUGMENTATIONS.get(name)
        table.add_row(
            name, json.dumps(entry.defaults) if entry.defaults else "-", entry.description
        )
    Console(width=160).print(table)


@augment_app.command("preview")
def preview(
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Data set root (default: synthetic cells).")
    ] = None,
    aug: Annotated[
        str | None,
        typer.Option("--aug", help="Augmentations, e.g. 'flip,rotate:degrees=90' (default: all)."),
    ] = None,
    size: Annotated[int, typer.Option("--size", min=16, help="Image side in px.")] = 256,
    n_per_class: Annotated[int, typer.Option("--n-per-class", min=1, help="Cells per class.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed for cells and augmentations.")] = 0,
) -> None:
    """Write a grid of a few cells per class under every augmentation (the paper's Figure 2)."""
    from leukaug.augment import AugmentationSpec, list_augmentations, parse_augmentations
    from leukaug.augment.preview import cells_from_dataset, render_preview

    specs = (
        parse_augmentations(aug)
        if aug is not None
        else tuple(AugmentationSpec(name) for name in list_augmentations())
    )
    if data is None:
        from leukaug.data.synth import sample_cells

        images, labels = sample_cells(n_per_class, size, seed)
    else:
        images, labels = cells_from_dataset(data, n_per_class, size, seed)
    path = render_preview(images, labels, specs, out, seed=seed)
    typer.echo(f"wrote {path} ({len(labels)} cells x {len(specs) + 1} columns)")


@weights_app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="Model name, e.g. resnet50.")],
    dest: Annotated[
        Path | None, typer.Option("--dest", help="Folder (default: the torch hub cache).")
    ] = None,
) -> None:
    """Download a model's pinned ImageNet weights (on a machine with internet access)."""
    from leukaug.models import factory

    path = factory.download_weights(name, dest)
    typer.echo(f"{name}: {path}")
    if dest is not None:
        typer.echo(
            f"Copy it to {factory.expected_path(name)} on the training machine (its torch hub "
            "cache), or pass weights_path."
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("models")(models)
    app.command("augmentations")(augmentations)
    app.add_typer(augment_app, name="augment")
    app.add_typer(weights_app, name="weights")
