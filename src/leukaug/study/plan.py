"""A study's plan: config -> arms (model x augmentation x regime x seed [x fold]) in
dependency order, and the resume checks against what an earlier run left in the study folder.

With `[data] cv_folds = K` every arm x seed runs once per fold, in `arms/<name>-s<seed>-f<k>`;
the fold is part of the arm's spec (`ArmSpec.fold`), so of its config hash, and each fold
resumes on its own.

Resume rules: a finished arm with the same config hash is skipped; an interrupted arm
continues from its `last.pt`; an arm folder holding another config hash, an arm folder the
study does not have, or a study folder whose data split changed, is a `ConfigError` unless
`force=True` (then those arms, and the arms initialised from them, start over or are
deleted). A failed arm (its `error.json`) is retried.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from leukaug.arm.kinds import ARM_KINDS, FEATURES_MODEL, check_spec
from leukaug.arm.spec import ArmSpec, resolve_image_size
from leukaug.augment import AugmentationSpec
from leukaug.core import atomic
from leukaug.core.errors import ConfigError, unknown_name_message
from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.study.jobs import StudyArm
from leukaug.study.study_file import Experiment, StudyConfig, parse_study

SANITY_LABELS = ("features_gbm", "sanity_features_gbm")  # the baseline's model label, if free
SANITY_EXPERIMENT = "sanity baseline"


def arm_name(model: str, augmentation: str, regime: str) -> str:
    return f"{model}-{augmentation}-{regime}"


def arm_id(name: str, seed: int, fold: int | None = None) -> str:
    return f"{name}-s{seed}" if fold is None else f"{name}-s{seed}-f{fold}"


def study_folds(config: StudyConfig) -> list[int | None]:
    """The folds every arm x seed runs on: [None] for the one split, else 0..K-1."""
    n_folds = config.data.cv_folds
    return [None] if n_folds is None else list(range(n_folds))


def _grid(config: StudyConfig) -> list[tuple[str, str, str]]:
    """(model, augmentation, regime) labels in config order, duplicates across experiments once."""
    experiments = config.experiments or [None]
    combos: dict[tuple[str, str, str], None] = {}
    for experiment in experiments:
        models = (experiment and experiment.models) or list(config.models)
        augmentations = (experiment and experiment.augmentations) or list(config.augmentations)
        regimes = (experiment and experiment.regimes) or list(config.regimes)
        for model in models:
            for augmentation in augmentations:
                for regime in regimes:
                    combos[(model, augmentation, regime)] = None
    return list(combos)


def _free_label(candidates: Sequence[str], taken: Any) -> str:
    free = [label for label in candidates if label not in taken]
    return free[0] if free else f"{candidates[-1]}_{len(taken)}"


def with_sanity_baseline(config: StudyConfig) -> StudyConfig:
    """`config` with a `features` arm (cell features + gradient boosting, no augmentation,
    the plain regime) as the reference point every CNN must beat: on user data (source not
    "embedded") when `[study] sanity_baseline` is true and no model is of kind `features`.
    Its image size is [training]'s, else the first model's. The other arms are unchanged:
    the grid becomes explicit experiments, the baseline one more."""
    if config.data.embedded or not config.study.sanity_baseline:
        return config
    if any(entry.kind == "features" for entry in config.models.values()):
        return config
    data = config.to_dict()
    experiments = [
        {
            "name": experiment.name,
            "models": experiment.models or list(config.models),
            "augmentations": experiment.augmentations or list(config.augmentations),
            "regimes": experiment.regimes or list(config.regimes),
        }
        for experiment in config.experiments or [Experiment()]
    ]
    augmentation = next((k for k, arm in config.augmentations.items() if not arm.ops), None)
    if augmentation is None:
        augmentation = _free_label(("none", "sanity_none"), config.augmentations)
        data["augmentations"][augmentation] = {"ops": []}
    regime = next(
        (
            k
            for k, entry in config.regimes.items()
            if entry.kind == "full" and entry.init_from is None
            and entry.class_weighting == "balanced"
        ),
        None,
    )  # fmt: skip
    if regime is None:
        regime = _free_label(("full", "sanity_full"), config.regimes)
        data["regimes"][regime] = {}
    label = _free_label(SANITY_LABELS, config.models)
    first = next(iter(config.models))
    size = config.training.image_size or resolve_image_size(
        config.model_name(first), config.models[first].image_size
    )
    data["models"][label] = {"model": FEATURES_MODEL, "kind": "features", "image_size": size}
    experiments.append(
        {"name": SANITY_EXPERIMENT, "models": [label], "augmentations": [augmentation],
         "regimes": [regime]}
    )  # fmt: skip
    data["experiments"] = experiments
    return parse_study(data, "[study] sanity_baseline")


def arm_spec(config: StudyConfig, model: str, augmentation: str, regime: str, seed: int) -> ArmSpec:
    """The spec of one arm: [training] (with the regime's overrides), the model's entry, the
    augmentation arm and the regime. The config's field names are ArmSpec's field names."""
    entry = config.models[model]
    augmentation_arm = config.augmentations[augmentation]
    mode = config.regimes[regime]
    training = config.training_for(regime)
    settings = training.model_dump() | entry.model_dump(exclude={"model", "image_size"})
    settings["image_size"] = entry.image_size or training.image_size
    if augmentation_arm.p is not None:
        settings["aug_p"] = augmentation_arm.p
    if augmentation_arm.mode is not None:
        settings["aug_mode"] = augmentation_arm.mode
    return ArmSpec(
        model=config.model_name(model),
        augmentations=tuple(
            AugmentationSpec(op.name, dict(op.params)) for op in augmentation_arm.ops
        ),
        regime=mode.kind,
        freeze_first=mode.freeze_first,
        class_weighting=mode.class_weighting,
        seed=seed,
        **settings,
    )


def expand_arms(config: StudyConfig, arms_dir: str | Path) -> list[StudyArm]:
    """All arms of the study, each after the arm it is initialised from.

    `init_from` names another arm (without seed); the arm of the same seed (and fold) runs
    first and its `checkpoint.pt` (best validation loss) becomes this arm's starting weights.
    """
    arms_dir = Path(arms_dir).resolve()
    combos = _grid(config)
    names = {arm_name(*combo): combo for combo in combos}
    arms: list[StudyArm] = []
    extra_seeds = [s for s in config.study.reference_seeds if s not in config.study.seeds]
    for seed in [*config.study.seeds, *extra_seeds]:
        for fold in study_folds(config):
            for name, (model, augmentation, regime) in names.items():
                if seed in extra_seeds and augmentation != config.study.baseline:
                    continue  # `[study] reference_seeds`: only the reference arms run these
                spec = replace(arm_spec(config, model, augmentation, regime, seed), fold=fold)
                source = config.regimes[regime].init_from
                depends_on = None
                if source is not None:
                    _check_source(config, names, regime, name, source, spec.model)
                    depends_on = arm_id(source, seed, fold)
                    if seed in extra_seeds and names[source][1] != config.study.baseline:
                        raise ConfigError(
                            f"study.reference_seeds: reference arm {name!r} starts from "
                            f"{source!r}, which runs only the study's seeds; drop seed {seed} "
                            "from reference_seeds or give the source arm the reference "
                            "augmentation."
                        )
                    checkpoint = ArmFolder(arms_dir / depends_on).checkpoint
                    spec = replace(spec, init_from=str(checkpoint))
                check_spec(spec)  # what the arm's kind needs (arm_kinds.py)
                identifier = arm_id(name, seed, fold)
                arms.append(StudyArm(identifier, name, spec, spec.resolved_image_size, depends_on))
    for shape in {
        (a.spec.model, a.spec.head, a.image_size, a.spec.regime, a.spec.freeze_first)
        for a in arms
        if ARM_KINDS.get(a.spec.kind).cnn and not _finished(a, arms_dir)
    }:
        _dry_build(*shape)
    baseline = config.study.baseline
    if baseline is not None and baseline not in names and baseline not in config.augmentations:
        valid = [*config.augmentations, *names]
        raise ConfigError(
            "study.baseline: " + unknown_name_message("augmentation or arm", baseline, valid)
        )
    for index, pair in enumerate(config.study.pairs):
        for key in ("arm", "reference"):
            if pair[key] not in names:
                raise ConfigError(
                    f"study.pairs[{index}].{key}: " + unknown_name_message("arm", pair[key], names)
                )
    return topological_order(arms)


def _check_source(
    config: StudyConfig,
    names: dict[str, tuple[str, str, str]],
    regime: str,
    name: str,
    source: str,
    model: str,
) -> None:
    """`regimes.<regime>.init_from` names another arm of the same model."""
    if source not in names:
        raise ConfigError(
            f"regimes.{regime}.init_from: " + unknown_name_message("arm", source, names)
        )
    if source == name:
        raise ConfigError(f"regimes.{regime}.init_from: arm {name!r} cannot start from itself.")
    source_model = config.model_name(names[source][0])
    if source_model != model:
        raise ConfigError(
            f"regimes.{regime}.init_from: arm {name!r} ({model}) cannot start "
            f"from {source!r}, a {source_model}."
        )


def _finished(arm: StudyArm, arms_dir: Path) -> bool:
    """The arm completed earlier with this configuration: nothing of it will be built."""
    folder = ArmFolder(arms_dir / arm.arm_id)
    if not folder.arm_json.is_file():  # never started, or --out is not a folder (preflight says)
        return False
    info = folder.read_info()
    return (
        info is not None
        and info.get("config_hash") == arm.spec.config_hash()
        and folder.is_complete()
    )


def _dry_build(model: str, head: str, image_size: int, regime: str, freeze_first: int) -> None:
    """Build the architecture on the meta device (no memory, no weights) and apply the regime,
    so an impossible combination fails before any arm runs (imported here: the model
    libraries load only when an arm will be built)."""
    from leukaug.models import apply_regime, get_model

    with torch.device("meta"):
        try:
            apply_regime(get_model(model, head=head, image_size=image_size), regime, freeze_first)
        except ConfigError as error:
            raise ConfigError(
                f"model {model!r} at {image_size} px with regime {regime!r}: {error}"
            ) from None


def topological_order(arms: Sequence[StudyArm]) -> list[StudyArm]:
    """Arms in their given order, except that every arm comes after its `depends_on`."""
    by_id = {arm.arm_id: arm for arm in arms}
    ordered: list[StudyArm] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(arm: StudyArm) -> None:
        if arm.arm_id in placed:
            return
        if arm.arm_id in visiting:
            raise ConfigError(f"init_from forms a cycle through arm {arm.name!r}.")
        visiting.add(arm.arm_id)
        if arm.depends_on is not None:
            place(by_id[arm.depends_on])
        visiting.discard(arm.arm_id)
        placed.add(arm.arm_id)
        ordered.append(arm)

    for arm in arms:
        place(arm)
    return ordered


def dependents(arms: Sequence[StudyArm], roots: set[str]) -> set[str]:
    """`roots` and every arm that starts, directly or not, from one of them."""
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for arm in arms:
            if arm.depends_on in found and arm.arm_id not in found:
                found.add(arm.arm_id)
                changed = True
    return found


# --------------------------------------------------------------------------- resume


@dataclass
class StudyPlan:
    """A study's arms and what the resume rules decide for its folder (`plan_study`)."""

    arms: list[StudyArm]
    folder: StudyFolder
    force: bool
    restart: set[str] = field(default_factory=set)  # arm folders deleted before the run

    def check_folder(self) -> None:
        """With the study folder locked: the arm folders that must start over (another
        configuration, not in this study); a ConfigError without `force`."""
        self.restart = check_resume(self.arms, self.folder.path, force=self.force)

    @property
    def image_sizes(self) -> list[int]:
        return sorted({arm.image_size for arm in self.arms})

    def settle(self, data_info: dict[str, Any]) -> None:
        """Once the data are prepared: restart every arm if the earlier arms were trained on
        another split (a ConfigError without `force`), then delete the arm folders that
        start over."""
        if check_data_unchanged(self.folder.path, data_info, force=self.force):
            self.restart = {arm.arm_id for arm in self.arms}
        reset_arms(self.folder.path, self.restart)


def plan_study(config: StudyConfig, folder: StudyFolder, *, force: bool) -> StudyPlan:
    """The arms of `config` in dependency order, to run into `folder`; the resume rules
    (see the module doc) are the plan's `check_folder` and `settle`."""
    return StudyPlan(expand_arms(config, folder.arms_dir), folder, force)


def stale_arms(arms: Sequence[StudyArm], folder: StudyFolder) -> list[str]:
    """Arm folders that hold another config hash than this study asks for."""
    stale = []
    for arm in arms:
        previous = folder.arm(arm.arm_id).read_info()
        if previous is not None and previous.get("config_hash") != arm.spec.config_hash():
            stale.append(arm.arm_id)
    return stale


def foreign_arms(arms: Sequence[StudyArm], folder: StudyFolder) -> list[str]:
    """Arm folders that this study does not have (the report would include them)."""
    ours = {arm.arm_id for arm in arms}
    return [arm.arm_id for arm in folder.arm_folders() if arm.arm_id not in ours]


def check_resume(arms: Sequence[StudyArm], out_dir: Path, *, force: bool) -> set[str]:
    """Arm folders to delete before the run: those holding another configuration (and
    the arms initialised from them) and those not in this study. Without `force`, any of
    them is a ConfigError."""
    folder = StudyFolder(out_dir)
    stale = stale_arms(arms, folder)
    foreign = foreign_arms(arms, folder)
    if stale and not force:
        raise ConfigError(
            f"{out_dir} already holds results for {len(stale)} arm(s) with another "
            f"configuration: {', '.join(stale)}. Re-run with --force to replace them, "
            "or choose another --out folder."
        )
    if foreign and not force:
        raise ConfigError(
            f"{out_dir} holds {len(foreign)} arm folder(s) that this study does not have: "
            f"{', '.join(foreign)} (another study, or arms since removed from it). Re-run "
            "with --force to delete them, or choose another --out folder."
        )
    return dependents(arms, set(stale)) | set(foreign)


def check_data_unchanged(out_dir: Path, info: dict[str, Any], *, force: bool) -> bool:
    """True when existing arms were trained on another split (allowed only with `force`)."""
    folder = StudyFolder(out_dir)
    previous = atomic.read_json(folder.dataset_json)
    if previous is None or not folder.has_arms():
        return False
    if previous.get("split_fingerprint") == info["split_fingerprint"] and (
        previous.get("normalize") == info.get("normalize")  # stain normalisation: other images
    ):
        return False
    if not force:
        raise ConfigError(
            f"{out_dir} holds arms trained on another data set or split "
            f"({previous.get('root')}, split {previous.get('split')}); now "
            f"{info['root']}, split {info['split']}. Re-run with --force to retrain every "
            "arm, or choose another --out folder."
        )
    return True


def reset_arms(out_dir: Path, arm_ids: set[str]) -> None:
    """Delete the named arm folders (they start over)."""
    for identifier in sorted(arm_ids):
        folder = StudyFolder(out_dir).arm(identifier).path
        if folder.exists():
            shutil.rmtree(folder)
