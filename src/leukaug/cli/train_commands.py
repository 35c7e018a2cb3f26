"""`leukaug train`: one arm (model x augmentations x regime x seed) into one folder.

A one-arm study: every option is sugar for one `--set KEY=VALUE` of the study it builds
(`TRAIN_FLAGS`; `leukaug.study.overrides`), so the options and `--set` are checked like a
study file and a bad one is named by its flag. The arm is planned, its data are read, split
and cached, and it is trained by exactly the code `leukaug run` uses (`plan.expand_arms`,
`prepare.prepare_data`, `jobs.ArmJob`: thread pinning, Grad-CAM, `error.json`); only OUT
differs: the arm's own folder, not a study folder. Defaults and allowed values come from
`ArmSpec` (`ARM_DEFAULTS`, `CHOICES`) and the study file's [data] section.
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
from leukaug.core.errors import ConfigError, LeukaugError
from leukaug.core.layout import ArmFolder
from leukaug.core.lock import FolderLocked, clear_locked_folder, folder_lock
from leukaug.data.choices import LAYOUTS, STAIN_NORMALIZATIONS
from leukaug.study.overrides import Flag, apply_overrides, flag_assignments, flag_names
from leukaug.study.study_file import SECTION_KEYS, DataSection, StudyConfig, parse_study

if TYPE_CHECKING:
    from leukaug.study.jobs import ArmOutcome

DATA_DEFAULTS = {name: field.default for name, field in DataSection.model_fields.items()}
OPTIONS_SOURCE = "leukaug train"
EXIT_ARM_FAILED = 1

# Each option of `leukaug train` and the study key it sets; {model}, {aug} and {regime} are
# the labels of the one model, augmentation arm and regime (the arm's name is built of them).
TRAIN_FLAGS = {
    "data": Flag("--data", "data.source"),
    "layout": Flag("--layout", "data.layout"),
    "positive_class": Flag("--positive-class", "data.positive_class"),
    "labels_csv": Flag("--labels-csv", "data.labels_csv"),
    "cache_dir": Flag("--cache-dir", "data.cache_dir"),
    "split": Flag("--split", "data.split"),
    "val_fraction": Flag("--val-fraction", "data.val_fraction"),
    "split_seed": Flag("--split-seed", "data.split_seed"),
    "test_fraction": Flag("--test-fraction", "data.test_fraction"),
    "normalize": Flag("--normalize", "data.normalize"),
    "normalize_reference": Flag("--normalize-reference", "data.normalize_reference"),
    "seed": Flag("--seed", "study.seeds"),
    "device": Flag("--device", "study.device"),
    "image_size": Flag("--image-size", "training.image_size"),
    "epochs": Flag("--epochs", "training.epochs"),
    "batch_size": Flag("--batch-size", "training.batch_size"),
    "optimizer": Flag("--optimizer", "training.optimizer"),
    "lr": Flag("--lr", "training.lr"),
    "weight_decay": Flag("--weight-decay", "training.weight_decay"),
    "early_stopping": Flag("--early-stopping", "training.early_stopping_patience"),
    "aug_p": Flag("--aug-p", "training.aug_p"),
    "aug_mode": Flag("--aug-mode", "training.aug_mode"),
    "tta": Flag("--tta", "training.tta"),
    "model": Flag("--model", "models.{model}.model"),
    "pretrained": Flag("--pretrained", "models.{model}.pretrained"),
    "head": Flag("--head", "models.{model}.head"),
    "weights_path": Flag("--weights-path", "models.{model}.weights_path"),
    "aug": Flag("--aug", "augmentations.{aug}"),
    "regime": Flag("--regime", "regimes.{regime}.kind"),
    "freeze_first": Flag("--freeze-first", "regimes.{regime}.freeze_first"),
    "class_weighting": Flag("--class-weighting", "regimes.{regime}.class_weighting"),
}

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
        overrides: list[str] = typer.Option(
            [],
            "--set",
            metavar="KEY=VALUE",
            help="Any other setting of the one-arm study, VALUE in TOML (repeatable): "
            "--set training.amsgrad=true. The options above are sugar for these.",
            show_default=False,
        ),
    ) -> None:
        """Train one arm and write history.csv, predictions.csv, metrics.json and checkpoints to OUT."""
        values = {name: value for name, value in locals().items() if name in TRAIN_FLAGS}
        config = train_config(values, out.name, overrides)
        outcome = train_one_arm(config, out, init_from, force=force)
        summarise(outcome, out, Console(stderr=True, markup=False))  # paths may hold "[...]"
        if outcome.failed:
            raise typer.Exit(EXIT_ARM_FAILED)


def train_config(values: dict[str, Any], name: str, overrides: list[str]) -> StudyConfig:
    """The one-arm study of `leukaug train`'s option values (by parameter name), then
    `--set` overrides; a problem is named by the option that set it."""
    augmentations = parse_augmentations(values["aug"])
    labels = {
        "model": _label(values["model"]),
        "aug": _label("_".join(a.name for a in augmentations) or "none"),
        "regime": _label(values["regime"]),
    }
    values = values | {
        "seed": [values["seed"]],
        "aug": [{"name": a.name, "params": dict(a.params or {})} for a in augmentations],
    }
    flags = [
        (Flag(flag.flag, flag.key.format(**labels)), _plain(values[name]))
        for name, flag in TRAIN_FLAGS.items()
    ]
    table = apply_overrides(
        {"study": {"name": name}}, [*flag_assignments(flags), *overrides], SECTION_KEYS
    )
    return parse_study(table, OPTIONS_SOURCE, flag_names(flag for flag, _ in flags))


def _plain(value: Any) -> Any:
    """An option's value as the study file holds it (paths as text)."""
    return str(value) if isinstance(value, Path) else value


def _label(model: str) -> str:
    """A study label for a model name (labels allow only letters, digits and '_')."""
    return re.sub(r"\W", "_", model)


def train_one_arm(
    config: StudyConfig, out: Path, init_from: Path | None, *, force: bool = False
) -> ArmOutcome:
    """Plan the config's one arm, prepare its data as a study does, and run it into `out`
    through the study's job (`jobs.ArmJob`); nothing is written before every check passed.
    With `force`, an arm of another configuration in `out` is replaced. A `LeukaugError`
    in the arm (recorded in its error.json) is raised; any other failure is the outcome."""
    from leukaug.arm.determinism import resolve_threads
    from leukaug.arm.lifecycle import check_folder
    from leukaug.arm.network import load_state_file
    from leukaug.study.jobs import ArmJob, run_settings
    from leukaug.study.plan import expand_arms
    from leukaug.study.preflight import check_device, check_output_folder, weights_problems
    from leukaug.study.prepare import prepare_data

    (arm,) = expand_arms(config, out.parent)
    if init_from:
        arm = replace(arm, spec=replace(arm.spec, init_from=str(init_from)))
    if arm.spec.weights_path and (missing := weights_problems([arm])):
        raise ConfigError(" ".join(missing))  # before anything is written to OUT
    out = check_output_folder(out)
    check_device(config.study.device, "--device")
    if init_from:
        load_state_file(init_from)  # "not a weights file" before any data work
    console = Console(stderr=True)
    with folder_lock(out, "arm folder"):
        previous = ArmFolder(out).read_info()
        if force and previous and previous.get("config_hash") != arm.spec.config_hash():
            console.print(f"--force: replacing arm {previous.get('arm_id')} in {out}", markup=False)
            clear_locked_folder(out)
        check_folder(arm.spec, ArmFolder(out), out.name, arm.name)  # another config: an error
    arm = replace(arm, arm_id=out.name)
    threads = resolve_threads(config.executor.threads)
    with arm_display(console, study=False) as display:
        data = prepare_data(config, [arm.image_size], need_test=False)  # val judges it
        settings = replace(run_settings(config, data.crop), threads=threads)
        job = ArmJob(
            out, data.manifest, data.cache_dir, settings, single_arm=True,
            background_check=config.study.background_check,
        )  # fmt: skip
        outcome = job.run(
            arm,
            cache=data.caches[arm.image_size],
            reraise=lambda error: isinstance(error, LeukaugError),
            callbacks=display.callbacks,
        )
    if outcome.error_type == FolderLocked.__name__:
        raise FolderLocked(outcome.message or f"{out} is locked by another run.")
    return outcome


def summarise(outcome: ArmOutcome, out: Path, console: Console) -> None:
    """One line per epoch, then per split AUC, balanced accuracy and accuracy at the 0.5
    rule and at the operating threshold chosen on the validation split."""
    from leukaug.study.jobs import STATUS_SKIPPED

    if outcome.failed:
        console.print(
            f"FAILED {outcome.arm_id}: {outcome.error_type}: {outcome.message} "
            f"(see {ArmFolder(out).error}; run the same command again to retry)"
        )
        return
    folder = ArmFolder(out)
    if outcome.status == STATUS_SKIPPED:
        info = folder.read_info() or {}
        console.print(
            f"{out} is already complete (config {info.get('config_hash')}); nothing to do."
        )
    if folder.history.is_file():
        import pandas as pd

        for row in pd.read_csv(folder.history).itertuples():
            console.print(
                f"epoch {row.epoch}: train loss {row.train_loss:.4f} acc {row.train_accuracy:.3f}"
                f" | val loss {row.val_loss:.4f} acc {row.val_accuracy:.3f} ({row.seconds:.1f} s)"
            )
    for line in metric_lines(outcome.metrics):
        console.print(line)
    console.print(f"results in {out}")


def metric_lines(metrics: dict[str, Any]) -> list[str]:
    """`val:` and `test:` lines: AUC, balanced accuracy and accuracy at 0.5, and at the
    operating threshold (Youden's J on the validation split)."""
    lines = []
    splits = metrics.get("splits") or {}
    operating = metrics.get("operating_threshold")
    for split_name in ("val", "test"):
        split = splits.get(split_name)
        if not split:
            continue
        text = (
            f"{split_name} (n = {split.get('n')}): AUC {_metric(split.get('auc'))}, "
            f"balanced accuracy {_metric(split.get('balanced_accuracy'))}, "
            f"accuracy {_metric(split.get('accuracy'))} at threshold 0.5"
        )
        if operating is not None:
            text += (
                f"; at the operating threshold {operating:.3f}: balanced accuracy "
                f"{_metric(split.get('op_balanced_accuracy'))}, "
                f"accuracy {_metric(split.get('op_accuracy'))}"
            )
        lines.append(text)
    if operating is not None:
        lines.append(
            f"operating threshold {operating:.3f} ({metrics.get('operating_threshold_source')})"
        )
    return lines


def _metric(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
