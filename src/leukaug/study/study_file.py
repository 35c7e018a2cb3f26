"""The study file: pydantic models of a TOML study, validated at the boundary.

A study file is data, never code (read with `tomllib`). Every table forbids unknown keys
and answers a typo with "did you mean ...?"; names of models, augmentations, regimes and
arms are checked against their registries; a bad value names its key, the value and the
allowed range. `read_study_file(path)` turns any problem into one `ConfigError` naming the file.

Layout of a study file (see `studies/*.toml` for complete examples):

    [study]        name, description, seeds, baseline (the reference augmentation), pairs,
                   primary_metric, device, sanity_baseline, background_check
    [data]         source ("embedded" or a path), split, val_fraction, test_fraction,
                   cv_folds, normalize, normalize_reference, ...; [data.synth]
    [training]     image_size, epochs, batch_size, optimizer, lr, aug_p, tta, ...
    [models.X]     one table per model (X is a registry name unless `model` says otherwise)
    [augmentations] named augmentation arms: `flip = ["flip", {name = "rotate", ...}]`
    [regimes.X]    kind (full | freeze_first | freeze_backbone), class_weighting, init_from
    [[experiments]] optional sub-grids (models x augmentations x regimes); default: all
    [executor]     kind (local | ray), address, num_cpus, num_gpus, max_retries,
                   threads, deterministic, arms_per_device, checkpoint_interval_s
    [tracking]     tensorboard (event files per arm, default true), mlflow_uri
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from leukaug.arm.kinds import ARM_KINDS, check_kind_options
from leukaug.arm.spec import ARM_DEFAULTS, CHOICES
from leukaug.augment import AugmentationSpec, check_augmentations, list_augmentations
from leukaug.core.errors import ConfigError, unknown_name_message
from leukaug.data.choices import STAIN_NORMALIZATIONS
from leukaug.data.synth_config import SynthConfig
from leukaug.models import is_model_name, list_models, model_info
from leukaug.study.overrides import apply_overrides
from leukaug.study.overrides import describe as describe_overrides

# The allowed values of ArmSpec's enumerated settings, as pydantic types.
OptimizerName = Literal[CHOICES["optimizer"]]  # type: ignore[valid-type]
AugMode = Literal[CHOICES["aug_mode"]]  # type: ignore[valid-type]
HeadName = Literal[CHOICES["head"]]  # type: ignore[valid-type]
ClassWeighting = Literal[CHOICES["class_weighting"]]  # type: ignore[valid-type]
StackerName = Literal[CHOICES["stacker"]]  # type: ignore[valid-type]

EXECUTORS = ("local", "ray")  # how the arms run (leukaug.study.executors runs each)
LABEL_PATTERN = r"^[A-Za-z0-9_]+$"
EMBEDDED = "embedded"


class Strict(BaseModel):
    """Base of every table: unknown keys are errors with a 'did you mean' hint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(unknown_name_message("key", str(key), cls.model_fields))
        return data


class StudySection(Strict):
    name: str = "study"
    description: str = ""
    seeds: list[int] = Field(default=[0], min_length=1)
    # The reference AUGMENTATION label (e.g. "none"): each arm is compared with the arm that
    # differs from it only in its augmentations. An arm name (older files) is read as that
    # arm's augmentation. None: the unaugmented arms are the references.
    baseline: str | None = None
    # Explicit comparisons beside (or instead of) the matched ones: [[study.pairs]] arm = ..., reference = ...
    pairs: list[dict[str, str]] = Field(default_factory=list)
    # The one metric whose paired test decides every verdict (see docs/statistics.md).
    primary_metric: Literal["auc", "accuracy", "balanced_accuracy", "f1_weighted", "log_loss"] = (
        "auc"
    )
    # Accuracy, balanced accuracy and F1 as primary metrics: "validation" decides each run at
    # its own operating threshold chosen on its validation split; a number (e.g. 0.5) fixes it.
    threshold: Literal["validation"] | float = "validation"
    # More seeds for the reference arms than for the others (a superset of `seeds`; the
    # reference is in every comparison, about sqrt(K) times as many seeds for K arms).
    reference_seeds: list[int] = Field(default_factory=list)
    device: str = "auto"
    # On user data (source not "embedded"): add a `features` arm (cell features + gradient
    # boosting) as the reference point every CNN must beat (study.plan.with_sanity_baseline).
    sanity_baseline: bool = True
    # After each arm: its test AUC with the background outside the cell replaced
    # (background_check.csv; leukaug.arm.background_check).
    background_check: bool = True

    @field_validator("pairs")
    @classmethod
    def _pairs_name_two_arms(cls, pairs: list[dict[str, str]]) -> list[dict[str, str]]:
        for index, pair in enumerate(pairs):
            if set(pair) != {"arm", "reference"}:
                raise ValueError(
                    f"pairs[{index}] must have exactly the keys 'arm' and 'reference' "
                    f"(arm names without seed), got {sorted(pair)}"
                )
            if pair["arm"] == pair["reference"]:
                raise ValueError(f"pairs[{index}] compares arm {pair['arm']!r} with itself")
        return pairs

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        if any(seed < 0 for seed in seeds):
            raise ValueError(f"seeds must be >= 0, got {seeds}")
        return seeds

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, threshold: str | float) -> str | float:
        if isinstance(threshold, float) and not 0 < threshold < 1:
            raise ValueError(f"threshold must be 'validation' or lie in (0, 1), got {threshold}")
        return threshold

    @model_validator(mode="after")
    def _reference_seeds_cover_seeds(self) -> StudySection:
        extra = self.reference_seeds
        if extra and (missing := sorted(set(self.seeds) - set(extra))):
            raise ValueError(
                f"reference_seeds must include every seed of `seeds` (missing {missing}); "
                "list the reference's seeds in full, e.g. reference_seeds = [0, 1, ..., 8]"
            )
        if len(set(extra)) != len(extra) or any(seed < 0 for seed in extra):
            raise ValueError(f"reference_seeds must be distinct seeds >= 0, got {extra}")
        if extra and self.baseline is None:
            raise ValueError("reference_seeds needs `baseline` (the reference augmentation)")
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N', got {device!r}"
            )
        return device


class DataSection(Strict):
    """Where the images come from and how they are split.

    Relative paths are relative to the working directory (where `leukaug run` is started).
    """

    source: str = EMBEDDED
    layout: str = "auto"
    positive_class: str | None = None
    labels_csv: str | None = None
    dir: str | None = None  # embedded data: where to generate it (default <cache>/embedded-<hash>)
    cache_dir: str | None = (
        None  # image caches (default: leukaug.core.user_cache.default_cache_dir())
    )
    crop: float | None = Field(default=None, gt=0.0, le=1.0)  # central fraction kept
    split: Literal["subject", "image"] = "subject"
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    # a data set without a test set: hold out this fraction of each class's subjects as test
    test_fraction: float | None = Field(default=None, gt=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0)
    # K-fold cross-validation instead of a test split (data/folds.py): every arm x seed runs
    # on every fold; the data set must have no test split of its own.
    cv_folds: int | None = Field(default=None, ge=2, le=20)
    # stain normalisation applied once when the image cache is built (leukaug.data.stain_norm)
    normalize: Literal[STAIN_NORMALIZATIONS] = "none"  # type: ignore[valid-type]
    normalize_reference: str | None = (
        None  # an image to fit the target to (default: training cells)
    )
    synth: dict[str, Any] = Field(default_factory=dict)

    @field_validator("synth")
    @classmethod
    def _known_synth_settings(cls, synth: dict[str, Any]) -> dict[str, Any]:
        valid = [f.name for f in fields(SynthConfig)]
        for key in synth:
            if key not in valid:
                raise ValueError(unknown_name_message("synthetic-data setting", key, valid))
        try:
            SynthConfig(**synth).validate()
        except (ConfigError, TypeError) as error:
            raise ValueError(str(error)) from None
        return synth

    @model_validator(mode="after")
    def _synth_only_when_embedded(self) -> DataSection:
        if self.synth and self.source != EMBEDDED:
            raise ValueError(
                f"[data.synth] configures the embedded generator, but data.source is "
                f"{self.source!r}; remove [data.synth] or set source = 'embedded'"
            )
        return self

    @model_validator(mode="after")
    def _folds_need_data_without_test_split(self) -> DataSection:
        if self.cv_folds is not None and self.source == EMBEDDED:
            raise ValueError(
                f"cv_folds = {self.cv_folds}: the embedded synthetic data set has its own test "
                "split; cross-validation needs data without one (set data.source to your "
                "folder of cells, or remove cv_folds)"
            )
        if self.cv_folds is not None and self.test_fraction is not None:
            raise ValueError(
                f"cv_folds = {self.cv_folds} and test_fraction = {self.test_fraction} both say "
                "where the test cells come from: cross-validation tests every cell once, in its "
                "fold; keep one of the two"
            )
        return self

    @model_validator(mode="after")
    def _reference_needs_a_method(self) -> DataSection:
        if self.normalize_reference is not None and self.normalize == "none":
            raise ValueError(
                "normalize_reference is set but normalize = 'none'; set normalize = 'macenko' "
                "or 'reinhard', or remove normalize_reference"
            )
        return self

    @property
    def embedded(self) -> bool:
        return self.source == EMBEDDED


class TrainingSection(Strict):
    """Training settings shared by every arm (a regime may override some of them).

    Every field is an `ArmSpec` field of the same name, with ArmSpec's default and allowed
    values (`arm.ARM_DEFAULTS`, `arm.CHOICES`); the bounds here only guard the file.
    """

    image_size: int | None = Field(default=ARM_DEFAULTS["image_size"], ge=32, le=1024)
    epochs: int = Field(default=ARM_DEFAULTS["epochs"], ge=1, le=1000)
    batch_size: int = Field(default=ARM_DEFAULTS["batch_size"], ge=1, le=4096)
    optimizer: OptimizerName = ARM_DEFAULTS["optimizer"]
    lr: float = Field(default=ARM_DEFAULTS["lr"], gt=0.0, le=10.0)
    weight_decay: float = Field(default=ARM_DEFAULTS["weight_decay"], ge=0.0, le=1.0)
    amsgrad: bool = ARM_DEFAULTS["amsgrad"]
    early_stopping_patience: int | None = Field(
        default=ARM_DEFAULTS["early_stopping_patience"], ge=1, le=1000
    )
    aug_p: float = Field(default=ARM_DEFAULTS["aug_p"], ge=0.0, le=1.0)
    aug_mode: AugMode = ARM_DEFAULTS["aug_mode"]
    tta: bool = ARM_DEFAULTS["tta"]

    @field_validator("lr", "weight_decay", "aug_p")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value


class ModelEntry(Strict):
    """One model of the study; the table's key is its label (and registry name by default)."""

    model: str | None = None
    pretrained: bool = ARM_DEFAULTS["pretrained"]
    weights_path: str | None = ARM_DEFAULTS["weights_path"]
    head: HeadName = ARM_DEFAULTS["head"]
    image_size: int | None = Field(default=ARM_DEFAULTS["image_size"], ge=32, le=1024)
    kind: str = ARM_DEFAULTS["kind"]  # an arm kind (arm_kinds.ARM_KINDS)
    regions: list[str] = Field(default_factory=list)  # kind = "bagged_regions": its members
    stacker: StackerName = ARM_DEFAULTS["stacker"]  # kind = "bagged_regions"


class AugmentationOp(Strict):
    """One augmentation and its parameters: `"flip"` or `{name = "rotate", degrees = 180}`."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and "params" not in data:
            params = {k: v for k, v in data.items() if k != "name"}
            return {"name": data.get("name"), "params": params} if "name" in data else data
        return data


class AugmentationArm(Strict):
    """A named list of augmentations; a plain list is short for `{ops = [...]}`."""

    ops: list[AugmentationOp] = Field(default_factory=list)
    p: float | None = Field(default=None, ge=0.0, le=1.0)
    mode: AugMode | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return {"ops": data} if isinstance(data, list) else data


class RegimeEntry(Strict):
    """How the weights are trained: which layers, which loss weighting, which start."""

    kind: str = ARM_DEFAULTS["regime"]
    freeze_first: int = Field(default=ARM_DEFAULTS["freeze_first"], ge=0, le=10_000)
    class_weighting: ClassWeighting = ARM_DEFAULTS["class_weighting"]
    init_from: str | None = None  # another arm's name (same seed); it runs first
    training: TrainingSection | None = None  # overrides of [training] for this regime

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in CHOICES["regime"]:
            raise ValueError(unknown_name_message("regime kind", kind, CHOICES["regime"]))
        return kind

    @model_validator(mode="after")
    def _freeze_first_consistent(self) -> RegimeEntry:
        if self.kind == "freeze_first" and self.freeze_first < 1:
            raise ValueError(
                "kind = 'freeze_first' needs freeze_first >= 1 (the number of leading "
                f"layers to freeze), got {self.freeze_first}"
            )
        if self.kind != "freeze_first" and self.freeze_first:
            raise ValueError(
                f"freeze_first = {self.freeze_first} only applies to kind = 'freeze_first', "
                f"not {self.kind!r}"
            )
        return self


class Experiment(Strict):
    """A sub-grid; empty lists mean 'all' of the study's models/augmentations/regimes."""

    name: str = ""
    models: list[str] = Field(default_factory=list)
    augmentations: list[str] = Field(default_factory=list)
    regimes: list[str] = Field(default_factory=list)


class ExecutorSection(Strict):
    kind: Literal[EXECUTORS] = "local"  # type: ignore[valid-type]
    address: str | None = None  # Ray cluster address; None starts a local Ray instance
    num_cpus: float = Field(default=1.0, gt=0.0, le=1024)
    num_gpus: float = Field(default=0.0, ge=0.0, le=64)
    max_retries: int = Field(default=2, ge=0, le=100)
    # CPU threads per arm, applied by every executor (None: this machine's count, recorded)
    threads: int | None = Field(default=None, ge=1, le=1024)
    deterministic: bool = False  # CUDA: deterministic kernels (leukaug.arm.determinism)
    # local executor: arms at once on one device, one process each (None: 1 on CPU, 2 on
    # CUDA; see executors.DEFAULT_ARMS_PER_DEVICE)
    arms_per_device: int | None = Field(default=None, ge=1, le=64)
    # seconds between writes of an arm's resume state (None: auto; leukaug.arm.checkpoints)
    checkpoint_interval_s: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)

    @field_validator("num_gpus")
    @classmethod
    def _whole_gpus_above_one(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError(
                f"num_gpus = {value}: a Ray task takes a fraction of one GPU (e.g. 0.5: two "
                "arms share a GPU) or whole GPUs (1, 2, ...), nothing in between"
            )
        return value


class TrackingSection(Strict):
    """Experiment tracking of every arm (docs/tracking.md)."""

    tensorboard: bool = True  # event files in each arm folder
    mlflow_uri: str = ""  # e.g. "file:runs/mlruns": one MLflow run per arm; "" = off


class StudyConfig(Strict):
    study: StudySection = Field(default_factory=StudySection)
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    models: dict[str, ModelEntry] = Field(min_length=1)
    augmentations: dict[str, AugmentationArm] = Field(
        default_factory=lambda: {"none": AugmentationArm()}
    )
    regimes: dict[str, RegimeEntry] = Field(default_factory=lambda: {"full": RegimeEntry()})
    experiments: list[Experiment] = Field(default_factory=list)
    executor: ExecutorSection = Field(default_factory=ExecutorSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)

    @field_validator("models", "augmentations", "regimes")
    @classmethod
    def _labels_are_simple(cls, table: dict[str, Any]) -> dict[str, Any]:
        for label in table:
            if not re.fullmatch(LABEL_PATTERN, label):
                raise ValueError(
                    f"label {label!r} may use only letters, digits and '_' "
                    "(it becomes part of folder names)"
                )
        return table

    @model_validator(mode="after")
    def _names_exist(self) -> StudyConfig:
        for label, entry in self.models.items():
            name = entry.model or label
            try:
                check_kind_options(entry.kind, name, entry.regions, entry.stacker)
            except ConfigError as error:
                raise ValueError(f"models.{label}: {error}") from None
            if ARM_KINDS.get(entry.kind).cnn and not is_model_name(name):
                raise ValueError(
                    f"models.{label}: {unknown_name_message('model', name, _model_names())}"
                )
        for label, entry in self.models.items():
            if ARM_KINDS.get(entry.kind).cnn:
                _check_model_entry(label, entry, self)
        valid_augmentations = _augmentation_names()
        for label, arm in self.augmentations.items():
            for op in arm.ops:
                if op.name not in valid_augmentations:
                    raise ValueError(
                        f"augmentations.{label}: "
                        + unknown_name_message("augmentation", op.name, valid_augmentations)
                    )
            _check_augmentation_arm(label, arm)
        for index, experiment in enumerate(self.experiments):
            for field, table in (
                ("models", self.models),
                ("augmentations", self.augmentations),
                ("regimes", self.regimes),
            ):
                for label in getattr(experiment, field):
                    if label not in table:
                        raise ValueError(
                            f"experiments[{index}].{field}: "
                            + unknown_name_message(field.rstrip("s"), label, table)
                        )
        return self

    def training_for(self, regime: str) -> TrainingSection:
        """[training] with the regime's overrides applied."""
        overrides = self.regimes[regime].training
        if overrides is None:
            return self.training
        changed = {key: getattr(overrides, key) for key in overrides.model_fields_set}
        return self.training.model_copy(update=changed)

    def model_name(self, label: str) -> str:
        """The registry name behind a model label."""
        return self.models[label].model or label

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `parse_study` reads back to an equal config (regime overrides stay partial)."""
        data = self.model_dump(mode="json")
        for label, regime in self.regimes.items():
            if regime.training is not None:
                data["regimes"][label]["training"] = regime.training.model_dump(
                    mode="json", exclude_unset=True
                )
        return data


# Sections whose keys a one-part `--set KEY=VALUE` may name without the table (`seeds`).
SECTION_KEYS = {
    "study": StudySection.model_fields,
    "data": DataSection.model_fields,
    "training": TrainingSection.model_fields,
    "executor": ExecutorSection.model_fields,
    "tracking": TrackingSection.model_fields,
}


def _check_model_entry(label: str, entry: ModelEntry, config: StudyConfig) -> None:
    """Image size, head and weights that the registry entry supports."""
    info = model_info(entry.model or label)
    sizes = {"models." + label + ".image_size": entry.image_size}
    if entry.image_size is None:
        sizes = {"training.image_size": config.training.image_size}
        for name, regime in config.regimes.items():
            if regime.training is not None and "image_size" in regime.training.model_fields_set:
                sizes[f"regimes.{name}.training.image_size"] = regime.training.image_size
    for key, size in sizes.items():
        if size is not None and size < info.min_input_size:
            raise ValueError(
                f"{key} = {size} is too small for {info.name} (models.{label}); "
                f"it needs at least {info.min_input_size} px"
            )
    if entry.head not in info.heads:
        raise ValueError(
            f"models.{label}.head = {entry.head!r} is not available for {info.name}; "
            f"valid: {', '.join(info.heads)}"
        )
    if entry.pretrained and info.imagenet_weights is None and entry.weights_path is None:
        raise ValueError(
            f"models.{label}.pretrained = true, but {info.name} has no ImageNet weights; "
            "set pretrained = false or give weights_path"
        )


def _check_augmentation_arm(label: str, arm: AugmentationArm) -> None:
    """Parameters in range, each augmentation once (the checks the augmenter is built with)."""
    try:
        check_augmentations([AugmentationSpec(op.name, op.params) for op in arm.ops])
    except ConfigError as error:
        raise ValueError(f"augmentations.{label}: {error}") from None


def _model_names() -> list[str]:
    return list(list_models())


def _augmentation_names() -> list[str]:
    return list(list_augmentations())


def parse_study(
    data: dict[str, Any], source: str = "<study>", flags: Mapping[str, str] | None = None
) -> StudyConfig:
    """Validate a parsed study table; any problem becomes one readable `ConfigError`.

    `flags` (key -> command-line flag) is for a study built from a command's options
    (`leukaug train`): its problems are named by flag, not as a study file's."""
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source, flags)) from None


def read_study_file(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read and validate a TOML study file (never executes anything from it), with
    `--set KEY=VALUE` overrides applied before validation (`leukaug.study.overrides`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Study file {str(path)!r} does not exist.") from None
    except OSError as error:
        raise ConfigError(f"Cannot read study file {str(path)!r}: {error}") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} on line {line}); "
            "save the study file as UTF-8."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    if not overrides:
        return parse_study(data, str(path))
    data = apply_overrides(data, overrides, SECTION_KEYS)
    return parse_study(data, f"{path} with {describe_overrides(overrides)}")


def format_validation_error(
    error: ValidationError, source: str, flags: Mapping[str, str] | None = None
) -> str:
    """One line per problem: `file: key.path: message (got value)`; with `flags` (key ->
    flag), `source: option: message (got value)`, the keys the flags set named by flag."""
    what = "invalid option(s)" if flags is not None else "invalid study file"
    lines = [f"{source}: {what} ({error.error_count()} problem(s)):"]
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"] if not _is_internal(part))
        message = item["msg"].removeprefix("Value error, ")
        for key, flag in sorted((flags or {}).items(), key=lambda pair: -len(pair[0])):
            loc = flag if loc == key else loc
            message = re.sub(rf"\b{re.escape(key)}\b", flag, message)
        got = item.get("input")
        show_input = item["type"] not in ("missing", "value_error") and not isinstance(
            got, dict | list
        )
        suffix = f" (got {got!r})" if show_input else ""
        lines.append(f"  {loc}: {message}{suffix}" if loc else f"  {message}{suffix}")
    return "\n".join(lines)


def _is_internal(part: Any) -> bool:
    # pydantic puts union branch / validator names in `loc`; they mean nothing to a user
    return isinstance(part, str) and (part.startswith("function-") or part in ("str", "dict"))


def dump_toml(data: dict[str, Any]) -> str:
    """Serialise nested dicts of plain values as TOML (None values are left out)."""
    return tomli_w.dumps(_toml_ready(data))


def _toml_ready(value: Any) -> Any:
    """What TOML can hold: None-valued keys dropped, paths as strings, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_toml_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
