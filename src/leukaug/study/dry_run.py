"""What a study would do, without training anything (`leukaug run STUDY --dry-run`).

The arms (`plan.expand_arms`, which also builds each model shape once), the reference each
arm would be compared with (the report's own matching, `report.references.plan_references`,
run on the planned specs), the data (read from their headers, or the embedded generator's
settings when they are not generated yet), and the work: image passes of training and
evaluation for the arms not already complete in the study folder, with a time estimate per
arm and in total: from the finished arms of the same study where one of the same shape
(model, head, image size, batch size, regime) finished, else from a few training steps
measured on this machine and device (`leukaug.arm.timing`). Arms whose ImageNet weights are
not cached here are flagged with the `leukaug weights fetch` command that gets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from leukaug.arm.kinds import ARM_KINDS, expand_regions
from leukaug.arm.spec import ArmSpec
from leukaug.arm.timing import step_seconds
from leukaug.core.layout import StudyFolder
from leukaug.data.read import read_dataset
from leukaug.data.split import split_manifest
from leukaug.data.synth_config import SynthConfig
from leukaug.models.factory import imagenet_weights
from leukaug.stats.pairs import plan_references
from leukaug.stats.power import NEEDS, pilot_variances, plan_lines
from leukaug.stats.study_results import ArmResults, Study
from leukaug.study.executors import arms_per_device
from leukaug.study.jobs import StudyArm
from leukaug.study.plan import expand_arms, with_sanity_baseline
from leukaug.study.prepare import cross_validation_splits, embedded_data_dir, split_counts
from leukaug.study.study_file import StudyConfig

SPLITS = ("train", "val", "test")
FROM_FINISHED = "the finished arms of this study"
MEASURED = "training steps measured on"  # + the device


@dataclass
class PlannedArm:
    arm_id: str
    name: str
    seed: int
    model: str
    image_size: int
    epochs: int
    reference: str | None  # the arm name it is compared with; None: described, not tested
    complete: bool  # already complete in the study folder (a rerun skips it)
    depends_on: str | None = None
    estimate_seconds: float | None = None  # None: complete already, or no estimate
    estimate_source: str | None = None  # FROM_FINISHED, or MEASURED + the device
    fetch_weights: str | None = None  # the command that fetches missing ImageNet weights


@dataclass
class StudyPreview:
    """The plan of a study as `--dry-run` prints it (and `--json` writes it)."""

    name: str
    out_dir: str
    primary_metric: str
    baseline: str
    arms: list[PlannedArm]
    untested: dict[str, str]
    data: dict[str, Any]
    work: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "out_dir": self.out_dir,
            "primary_metric": self.primary_metric,
            "baseline": self.baseline,
            "arms": [vars(arm) for arm in self.arms],
            "untested": self.untested,
            "data": self.data,
            "work": self.work,
            "notes": self.notes,
        }


def preview_study(config: StudyConfig, out_dir: str | Path) -> StudyPreview:
    """Plan `config` into `out_dir` and describe it; reads data headers, trains nothing."""
    folder = StudyFolder(Path(out_dir).resolve())
    config = with_sanity_baseline(config)  # the features arm on user data, as the run adds it
    arms = expand_arms(config, folder.arms_dir)
    plan = plan_references(_planned_study(config, arms, folder), config.study.baseline)
    reference_of = {pair.arm: pair.reference for pair in plan.pairs}
    planned = [
        PlannedArm(
            arm_id=arm.arm_id,
            name=arm.name,
            seed=arm.spec.seed,
            model=arm.spec.model,
            image_size=arm.image_size,
            epochs=arm.spec.epochs,
            reference=reference_of.get(arm.name),
            complete=folder.arm(arm.arm_id).is_complete(),
            depends_on=arm.depends_on,
        )
        for arm in arms
    ]
    data = describe_data(config)
    estimate_times(config, arms, planned, data["images"], folder)
    for arm, plan_arm in zip(arms, planned, strict=True):
        plan_arm.fetch_weights = missing_weights(arm.spec)
    work = estimate_work(planned, data["images"])
    work["arms_at_once"] = arms_per_device(config.executor, config.study.device)
    estimates = [a.estimate_seconds for a in planned if a.estimate_seconds is not None]
    if estimates:  # arms without a network (features) take seconds: not timed
        work["estimated_seconds"] = sum(estimates) / work["arms_at_once"]
    sources = {arm.estimate_source or "" for arm in planned if not arm.complete}
    work["estimate_is_lower_bound"] = any(s.startswith(MEASURED) for s in sources)
    return StudyPreview(
        name=config.study.name,
        out_dir=str(folder.path),
        primary_metric=config.study.primary_metric,
        baseline=plan.baseline,
        arms=planned,
        untested={name: why for name, why in plan.untested.items()},
        data=data,
        work=work,
        notes=list(plan.notes),
    )


def _planned_study(config: StudyConfig, arms: list[StudyArm], folder: StudyFolder) -> Study:
    """The planned arms as the report's `Study` (specs only), for its reference matching."""
    empty = pd.DataFrame(columns=["split", "image_id", "subject", "label", "prob"])
    results = [
        ArmResults(arm.arm_id, arm.name, arm.spec.seed, {"spec": arm.spec.to_dict()}, empty, None)
        for arm in arms
    ]
    return Study(directory=folder.path, arms=results, config=config.to_dict())


def describe_data(config: StudyConfig) -> dict[str, Any]:
    """The data's root, layout and images per split: exact when the data exist (headers
    only), from the generator's settings for embedded data not generated yet."""
    data = config.data
    root = embedded_data_dir(config) if data.embedded else Path(data.source).resolve()
    facts: dict[str, Any] = {"source": data.source, "root": str(root), "split": data.split}
    if data.embedded and not (root / "synthetic_config.json").is_file():
        synth = SynthConfig(**data.synth)
        facts |= {"layout": "cnmc_kaggle (synthetic, generated on first run)", "exact": False}
        facts["images"] = _synthetic_counts(synth, data.val_fraction)
        facts["test_subjects"] = 2 * synth.test_subjects_per_class
        return facts
    kwargs = {} if data.embedded else {"layout": data.layout, "labels_csv": data.labels_csv}
    dataset = read_dataset(root, positive_class=data.positive_class, check_images=False, **kwargs)
    if data.cv_folds is not None:  # every fold's arms train and test on about fold 0's numbers
        manifest = cross_validation_splits(dataset.manifest, config)[1][0]
        facts["split"] = f"{data.split}, {data.cv_folds}-fold cross-validation (fold 0)"
    else:
        manifest = split_manifest(
            dataset.manifest,
            strategy=data.split,
            val_fraction=data.val_fraction,
            seed=data.split_seed,
        )
    counts = split_counts(manifest)
    facts |= {"layout": str(dataset.layout), "synthetic": dataset.synthetic, "exact": True}
    facts["images"] = {s: sum(c["images"] for c in counts[s].values()) for s in SPLITS}
    facts["test_subjects"] = sum(c["subjects"] for c in counts["test"].values())
    return facts


def _synthetic_counts(synth: SynthConfig, val_fraction: float) -> dict[str, int]:
    """Images per split of the embedded generator: ALL subjects have twice the HEM cells."""
    per_pair = 3 * synth.cells_per_subject  # one ALL + one HEM subject
    training = synth.subjects_per_class * per_pair
    val = round(training * val_fraction)
    return {
        "train": training - val,
        "val": val,
        "test": synth.test_subjects_per_class * per_pair,
    }


def estimate_work(arms: list[PlannedArm], images: dict[str, int]) -> dict[str, Any]:
    """Image passes left to do: epochs x training images (forward + backward) plus one
    evaluation of val per epoch and of val + test at the end, for arms not yet complete."""
    todo = [arm for arm in arms if not arm.complete]
    train_passes = sum(arm.epochs * images["train"] for arm in todo)
    eval_passes = sum(arm.epochs * images["val"] + images["val"] + images["test"] for arm in todo)
    return {
        "arms": len(arms),
        "arms_to_run": len(todo),
        "arms_complete": len(arms) - len(todo),
        "epochs": sum(arm.epochs for arm in todo),
        "training_image_passes": train_passes,
        "evaluation_image_passes": eval_passes,
    }


def shape_key(spec: ArmSpec) -> tuple[Any, ...]:
    """What an arm's time per epoch depends on (besides the data and the machine)."""
    return (spec.kind, spec.model, spec.head, spec.resolved_image_size, spec.batch_size,
            spec.regime, spec.freeze_first, spec.regions)  # fmt: skip


def estimate_times(
    config: StudyConfig,
    arms: list[StudyArm],
    planned: list[PlannedArm],
    images: dict[str, int],
    folder: StudyFolder,
) -> None:
    """Fill in each arm's `estimate_seconds`: epochs x the mean epoch time of finished arms
    of the same shape, else epochs x the measured seconds per training and validation
    image, plus the final evaluation (a bagged arm trains one network per region)."""
    finished = finished_epoch_seconds(arms, folder)
    measured: dict[tuple[Any, ...], Any] = {}
    for arm, plan_arm in zip(arms, planned, strict=True):
        spec = arm.spec
        if plan_arm.complete or not ARM_KINDS.get(spec.kind).cnn:
            continue
        members = len(expand_regions(spec.regions)) if spec.kind == "bagged_regions" else 1
        key = shape_key(spec)
        if key in finished:
            plan_arm.estimate_seconds = members * spec.epochs * finished[key]
            plan_arm.estimate_source = FROM_FINISHED
            continue
        if key not in measured:
            measured[key] = step_seconds(spec, config.study.device, config.executor.threads)
        timing = measured[key]
        per_epoch = images["train"] * timing.train + images["val"] * timing.evaluate
        final = (images["val"] + images["test"]) * timing.evaluate
        plan_arm.estimate_seconds = members * (spec.epochs * per_epoch + final)
        plan_arm.estimate_source = f"{MEASURED} {timing.device}"


def finished_epoch_seconds(arms: list[StudyArm], folder: StudyFolder) -> dict[tuple, float]:
    """Mean seconds per epoch of the complete arms in the study folder, by shape."""
    epochs: dict[tuple[Any, ...], list[float]] = {}
    for arm in arms:
        arm_folder = folder.arm(arm.arm_id)
        if not arm_folder.is_complete() or not arm_folder.history.is_file():
            continue
        history = pd.read_csv(arm_folder.history)
        if len(history) and "seconds" in history:
            epochs.setdefault(shape_key(arm.spec), []).extend(history["seconds"].tolist())
    return {key: sum(values) / len(values) for key, values in epochs.items()}


def missing_weights(spec: ArmSpec) -> str | None:
    """`leukaug weights fetch MODEL` when the arm starts from ImageNet weights that are not
    cached on this machine (and no weights_path is given); else None."""
    if not spec.pretrained or spec.weights_path or not ARM_KINDS.get(spec.kind).cnn:
        return None
    if imagenet_weights(spec.model).cached_path() is not None:
        return None
    return f"leukaug weights fetch {spec.model}"


# --- power from a pilot (`--variance-from`, issue 18; the computation is stats/power.py) ---


def power_lines(config: StudyConfig, preview: StudyPreview, pilot: Path | None) -> list[str]:
    """What the planned seeds and test subjects can detect, from a pilot study's variances;
    without a pilot, what one would need."""
    if pilot is None:
        return [f"power: {NEEDS}"]
    variances = pilot_variances(pilot, config.study.primary_metric)
    tested = list(dict.fromkeys(arm.name for arm in preview.arms if arm.reference))
    seeds = len(config.study.seeds)
    reference_seeds = len(config.study.reference_seeds) or seeds
    subjects = int(preview.data.get("test_subjects") or variances.n_subjects)
    return plan_lines(variances, tested, seeds, reference_seeds, subjects)
