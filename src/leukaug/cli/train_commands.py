"""`leukaug train`: train one arm (model x augmentations x regime x seed) into one folder."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from leukaug.errors import ConfigError


def default_cache_dir() -> Path:
    """Where decoded images are cached between runs ($XDG_CACHE_HOME/leukaug/images)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "leukaug" / "images"


def register(app: typer.Typer) -> None:
    """Add `train` to the main app."""

    @app.command("train")
    def train_command(
        data: Path = typer.Option(
            ..., "--data", help="Data root (C-NMC layout, class folders, or synthetic)."
        ),
        model: str = typer.Option(..., "--model", help="Model registry name (`leukaug models`)."),
        out: Path = typer.Option(
            ..., "--out", "-o", help="The arm's folder (results, checkpoints)."
        ),
        aug: str = typer.Option(
            "",
            "--aug",
            help="Augmentations, e.g. 'flip,rotate:degrees=90,stain:strength=strong'; empty: none.",
        ),
        aug_p: float = typer.Option(
            0.33, "--aug-p", help="Probability that a training image is augmented."
        ),
        aug_mode: str = typer.Option("together", "--aug-mode", help="together | independent."),
        epochs: int = typer.Option(5, "--epochs", min=1),
        batch_size: int = typer.Option(16, "--batch-size", min=1),
        lr: float = typer.Option(1e-4, "--lr"),
        weight_decay: float = typer.Option(0.0, "--weight-decay"),
        optimizer: str = typer.Option("adam", "--optimizer", help="adam | adamw | sgd."),
        early_stopping: int | None = typer.Option(
            None,
            "--early-stopping",
            min=1,
            help="Stop after N epochs without a lower validation loss.",
        ),
        seed: int = typer.Option(0, "--seed"),
        image_size: int | None = typer.Option(
            None, "--image-size", help="Default: the model's input size."
        ),
        regime: str = typer.Option(
            "full", "--regime", help="full | freeze_first | freeze_backbone."
        ),
        freeze_first: int = typer.Option(
            0, "--freeze-first", min=0, help="Layers frozen by freeze_first."
        ),
        init_from: Path | None = typer.Option(
            None, "--init-from", help="Start from this checkpoint file."
        ),
        class_weighting: str = typer.Option(
            "balanced", "--class-weighting", help="balanced | none."
        ),
        pretrained: bool = typer.Option(False, "--pretrained", help="Start from ImageNet weights."),
        weights_path: Path | None = typer.Option(
            None, "--weights-path", help="Local pretrained weights file."
        ),
        head: str = typer.Option("linear", "--head", help="linear | seed."),
        tta: bool = typer.Option(
            False, "--tta", help="Average predictions over the 8 dihedral views."
        ),
        split: str = typer.Option(
            "subject", "--split", help="subject | image (image leaks subjects)."
        ),
        val_fraction: float = typer.Option(0.2, "--val-fraction"),
        layout: str = typer.Option("auto", "--layout", help="Data layout (default: detected)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Image cache folder."),
    ) -> None:
        """Train one arm and write history.csv, predictions.csv, metrics.json and checkpoints to OUT."""
        from leukaug.arm import ArmSpec, run_arm
        from leukaug.augment import parse_augmentations
        from leukaug.data import load_or_build_cache, read_dataset, split_manifest
        from leukaug.models import model_info
        from leukaug.progress import training_progress

        if split not in ("subject", "image"):
            raise ConfigError(f"--split must be 'subject' or 'image', got {split!r}.")
        augmentations = parse_augmentations(aug)
        spec = ArmSpec(
            model=model, pretrained=pretrained, weights_path=str(weights_path) if weights_path else None,
            head=head, image_size=image_size, augmentations=augmentations,
            aug_p=aug_p, aug_mode=aug_mode, regime=regime, freeze_first=freeze_first,
            init_from=str(init_from) if init_from else None, class_weighting=class_weighting,
            epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
            early_stopping_patience=early_stopping, seed=seed, tta=tta,
        )  # fmt: skip
        console = Console(stderr=True)
        dataset = read_dataset(data, layout=layout)
        manifest = split_manifest(
            dataset.manifest, strategy=split, val_fraction=val_fraction, seed=seed
        )
        size = image_size or model_info(model).input_size
        with console.status(f"caching {len(manifest)} images at {size} px"):
            cache = load_or_build_cache(manifest, size, cache_dir or default_cache_dir())
        name = f"{model}_{'+'.join(a.name for a in augmentations) or 'none'}_{regime}"
        with training_progress(console) as progress:
            result = run_arm(
                spec,
                manifest,
                cache,
                out,
                arm_id=out.name,
                name=name,
                device=device,
                progress=progress,
            )
        summarise(result, console)


def summarise(result, console: Console) -> None:
    """One line per epoch and the accuracy per split."""
    if result.skipped:
        console.print(
            f"{result.out_dir} is already complete (config {result.config_hash}); nothing to do."
        )
    for row in result.history.itertuples():
        console.print(
            f"epoch {row.epoch}: train loss {row.train_loss:.4f} acc {row.train_accuracy:.3f} | "
            f"val loss {row.val_loss:.4f} acc {row.val_accuracy:.3f} ({row.seconds:.1f} s)"
        )
    splits = result.metrics.get("splits") or {}
    for split_name in ("val", "test"):
        accuracy = splits.get(split_name, {}).get("accuracy")
        if accuracy is not None:
            console.print(
                f"{split_name}: accuracy {accuracy:.3f} (n = {splits[split_name].get('n')})"
            )
    console.print(f"results in {result.out_dir}")
