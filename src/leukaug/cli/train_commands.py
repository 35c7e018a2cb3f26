"""`leukaug train`: one arm (model x augmentations x regime x seed) into one folder.

A one-arm study: the options become a study config, whose arm is planned, whose data are
read, split and cached, and which is trained by exactly the code `leukaug run` uses
(`plan.expand_arms`, `study_data.prepare_data`, `arm.run_arm`); only the output differs:
OUT is the arm's own folder, not a study folder. Defaults and allowed values come from
`ArmSpec` (`arm.ARM_DEFAULTS`, `arm.CHOICES`) and the study file's [data] section.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import typer
from rich.console import Console

from leukaug.arm.spec import ARM_DEFAULTS, CHOICES
from leukaug.augment import parse_augmentations
from leukaug.cli.conventions import choice
from leukaug.cli.progress import arm_display
from leukaug.core.layout import ArmFolder
from leukaug.core.lock import clear_locked_folder, folder_lock
from leukaug.data.choices import LAYOUTS, STAIN_NORMALIZATIONS
from leukaug.study.study_file import DataSection, StudyConfig, parse_study

if TYPE_CHECKING:
    from leukaug.arm.lifecycle import ArmResult

DATA_DEFAULTS = {name: field.default for name, field in DataSection.model_fields.items()}
OPTIONS_SOURCE = "leukaug train options"

# Closed sets, from their single sources (ArmSpec's CHOICES, the study file, the readers).
AugMode = choice(CHOICES["aug_mode"])
Optimizer = choice(CHOICES["optimizer"])
Regime = choice(CHOICES["regime"])
ClassWeighting = choice(CHOICES["class_weighting"])
Head = choice(CHOICES["head"])
Split = choice(get_args(DataSection.model_fields["split"].annotation))
Layout = choice(LAYOUTS)
StainNormalization = choice(STAIN_NORMALIZATIONS)


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
            ARM_DEFAULTS["aug_p"], "--aug-p", help="Probability that a training image is augmented."
        ),
        aug_mode: AugMode = typer.Option(
            ARM_DEFAULTS["aug_mode"],
            "--aug-mode",
            help="together: all augmentations on a chosen image; independent: each with p.",
        ),
        epochs: int = typer.Option(ARM_DEFAULTS["epochs"], "--epochs", min=1),
        batch_size: int = typer.Option(ARM_DEFAULTS["batch_size"], "--batch-size", min=1),
        lr: float = typer.Option(ARM_DEFAULTS["lr"], "--lr"),
        weight_decay: float = typer.Option(ARM_DEFAULTS["weight_decay"], "--weight-decay"),
        optimizer: Optimizer = typer.Option(ARM_DEFAULTS["optimizer"], "--optimizer"),
        early_stopping: int | None = typer.Option(
            ARM_DEFAULTS["early_stopping_patience"],
            "--early-stopping",
            min=1,
            help="Stop after N epochs without a lower validation loss.",
        ),
        seed: int = typer.Option(ARM_DEFAULTS["seed"], "--seed"),
        image_size: int | None = typer.Option(
            ARM_DEFAULTS["image_size"], "--image-size", help="Default: the model's input size."
        ),
        regime: Regime = typer.Option(ARM_DEFAULTS["regime"], "--regime"),
        freeze_first: int = typer.Option(
            ARM_DEFAULTS["freeze_first"],
            "--freeze-first",
            min=0,
            help="Layers frozen by freeze_first.",
        ),
        init_from: Path | None = typer.Option(
            None, "--init-from", help="Start from this checkpoint file."
        ),
        class_weighting: ClassWeighting = typer.Option(
            ARM_DEFAULTS["class_weighting"], "--class-weighting"
        ),
        pretrained: bool = typer.Option(
            ARM_DEFAULTS["pretrained"], "--pretrained", help="Start from ImageNet weights."
        ),
        weights_path: Path | None = typer.Option(
            None, "--weights-path", help="Local pretrained weights file."
        ),
        head: Head = typer.Option(ARM_DEFAULTS["head"], "--head"),
        tta: bool = typer.Option(
            ARM_DEFAULTS["tta"], "--tta", help="Average predictions over the 8 dihedral views."
        ),
        split: Split = typer.Option(
            DATA_DEFAULTS["split"], "--split", help="image-level splits leak subjects."
        ),
        val_fraction: float = typer.Option(DATA_DEFAULTS["val_fraction"], "--val-fraction"),
        split_seed: int = typer.Option(
            DATA_DEFAULTS["split_seed"], "--split-seed", help="Seed of the train/val split."
        ),
        test_fraction: float | None = typer.Option(
            None,
            "--test-fraction",
            help="Data with no test set: hold out this fraction of each class's subjects.",
        ),
        normalize: StainNormalization = typer.Option(
            DATA_DEFAULTS["normalize"], "--normalize", help="Stain normalisation of the images."
        ),
        normalize_reference: Path | None = typer.Option(
            None, "--normalize-reference", help="Image to fit the stain target to."
        ),
        layout: Layout = typer.Option(
            DATA_DEFAULTS["layout"], "--layout", help="Data layout (auto: detected)."
        ),
        positive_class: str | None = typer.Option(
            None, "--positive-class", help="For one-folder-per-class data: the ALL folder's name."
        ),
        labels_csv: Path | None = typer.Option(
            None, "--labels-csv", help="For CSV data: a CSV of path,label[,subject][,split]."
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
        cache_dir: Path | None = typer.Option(
            None,
            "--cache-dir",
            help="Image caches and generated data (default: the user cache folder).",
        ),
        force: bool = typer.Option(
            False, "--force", help="Replace an arm of another configuration in OUT (else an error)."
        ),
    ) -> None:
        """Train one arm and write history.csv, predictions.csv, metrics.json and checkpoints to OUT."""
        augmentations = parse_augmentations(aug)
        table: dict[str, Any] = {
            "study": {"name": out.name, "seeds": [seed], "device": device},
            "data": {
                "source": str(data), "layout": layout, "positive_class": positive_class,
                "labels_csv": str(labels_csv) if labels_csv else None,
                "cache_dir": str(cache_dir) if cache_dir else None,
                "split": split, "val_fraction": val_fraction, "split_seed": split_seed,
                "test_fraction": test_fraction, "normalize": normalize,
                "normalize_reference": str(normalize_reference) if normalize_reference else None,
            },
            "training": {
                "image_size": image_size, "epochs": epochs, "batch_size": batch_size,
                "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
                "early_stopping_patience": early_stopping, "aug_p": aug_p, "aug_mode": aug_mode,
                "tta": tta,
            },
            "models": {_label(model): {
                "model": model, "pretrained": pretrained, "head": head,
                "weights_path": str(weights_path) if weights_path else None,
            }},
            "augmentations": {
                _label("_".join(a.name for a in augmentations) or "none"):
                [{"name": a.name, "params": dict(a.params or {})} for a in augmentations]
            },
            "regimes": {_label(regime): {
                "kind": regime, "freeze_first": freeze_first, "class_weighting": class_weighting,
            }},
        }  # fmt: skip
        config = parse_study(_without_none(table), OPTIONS_SOURCE)
        result = train_one_arm(config, out, init_from, force=force)
        summarise(result, Console(stderr=True, markup=False))  # paths may hold "[...]"


def _label(model: str) -> str:
    """A study label for a model name (labels allow only letters, digits and '_')."""
    return re.sub(r"\W", "_", model)


def _without_none(table: dict[str, Any]) -> dict[str, Any]:
    """Options left unset take the config's defaults."""
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in table.items()
        if value is not None
    }


def train_one_arm(
    config: StudyConfig, out: Path, init_from: Path | None, *, force: bool = False
) -> ArmResult:
    """Plan the config's one arm, prepare its data as a study does, and train it into `out`,
    holding its lock; nothing is written before every check passed. With `force`, an arm
    of another configuration in `out` is replaced."""
    from leukaug.arm.dispatch import run_any_arm
    from leukaug.arm.network import load_state_file
    from leukaug.study.plan import expand_arms
    from leukaug.study.preflight import check_device, check_output_folder
    from leukaug.study.prepare import prepare_data

    (arm,) = expand_arms(config, out.parent)
    spec = replace(arm.spec, init_from=str(init_from)) if init_from else arm.spec
    out = check_output_folder(out)
    check_device(config.study.device, "--device")
    if init_from:
        load_state_file(init_from)  # "not a weights file" before any data work
    console = Console(stderr=True)
    with folder_lock(out, "arm folder"), arm_display(console, study=False) as display:
        previous = ArmFolder(out).read_info()
        if force and previous and previous.get("config_hash") != spec.config_hash():
            console.print(f"--force: replacing arm {previous.get('arm_id')} in {out}", markup=False)
            clear_locked_folder(out)
        data = prepare_data(config, [arm.image_size], need_test=False)  # val judges it
        return run_any_arm(  # a single arm; a full disk leaves it interrupted, resumable
            spec,
            data.manifest,
            data.caches[arm.image_size],
            out,
            arm_id=out.name,
            name=arm.name,
            device=config.study.device,
            callbacks=display.callbacks,
            crop=data.crop,
            tensorboard=config.tracking.tensorboard,
            mlflow_uri=config.tracking.mlflow_uri,
        )


def summarise(result: ArmResult, console: Console) -> None:
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
