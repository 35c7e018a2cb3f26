"""A whole study: config -> arms -> data -> executor -> report.

`expand_arms` turns a `StudyConfig` into arms (model x augmentation arm x regime x seed);
`study_data.prepare_data` reads or generates the data, splits it and builds one image
cache per image size; `run_study` checks what an earlier run left behind (resume rules below), writes the
resolved `study.toml`, `dataset.json` and the report's Figures 1-2, runs the arms through an
executor and builds the report.

Resume rules: a finished arm with the same config hash is skipped; an interrupted arm
continues from its `last.pt`; an arm folder holding another config hash, an arm folder the
study does not have, or a study folder whose data split changed, is a `ConfigError` unless
`force=True` (then those arms, and the arms initialised from them, start over or are
deleted). A failed arm (its `error.json`) is retried.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from leukaug import __version__, atomic
from leukaug.config import StudyConfig, dump_toml, parse_study
from leukaug.errors import ConfigError, unknown_name_message
from leukaug.study_data import PreparedData, prepare_data, render_figures

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from leukaug.arm import ArmSpec
    from leukaug.data.cache import ImageCache

STUDY_FILE = "study.toml"
DATASET_FILE = "dataset.json"
ERROR_FILE = "error.json"


@dataclass(frozen=True)
class Arm:
    """One unit of work: a spec, where it goes, and the arm it starts from (if any)."""

    arm_id: str  # folder name: "<name>-s<seed>"
    name: str  # the arm without its seed: "<model>-<augmentation>-<regime>"
    spec: ArmSpec
    image_size: int
    depends_on: str | None = None  # arm_id whose checkpoint.pt this arm starts from


@dataclass
class ArmOutcome:
    """What happened to one arm in this run."""

    arm_id: str
    name: str
    status: str  # "complete" | "skipped" (already complete) | "failed"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    message: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class StudyResult:
    out_dir: Path
    outcomes: list[ArmOutcome]
    report: dict[str, Path]

    @property
    def failed(self) -> list[ArmOutcome]:
        return [o for o in self.outcomes if o.failed]


# --------------------------------------------------------------------------- arms


def arm_name(model: str, augmentation: str, regime: str) -> str:
    return f"{model}-{augmentation}-{regime}"


def arm_id(name: str, seed: int) -> str:
    return f"{name}-s{seed}"


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


def _spec(config: StudyConfig, model: str, augmentation: str, regime: str, seed: int) -> ArmSpec:
    from leukaug.arm import ArmSpec
    from leukaug.augment import AugmentationSpec

    entry = config.models[model]
    arm = config.augmentations[augmentation]
    mode = config.regimes[regime]
    training = config.training
    if mode.training is not None:
        overrides = {key: getattr(mode.training, key) for key in mode.training.model_fields_set}
        training = training.model_copy(update=overrides)
    return ArmSpec(
        model=config.model_name(model),
        pretrained=entry.pretrained,
        weights_path=entry.weights_path,
        head=entry.head,
        image_size=entry.image_size or training.image_size,
        augmentations=tuple(AugmentationSpec(op.name, dict(op.params)) for op in arm.ops),
        aug_p=arm.p if arm.p is not None else training.aug_p,
        aug_mode=arm.mode or training.aug_mode,
        regime=mode.kind,
        freeze_first=mode.freeze_first,
        init_from=None,
        class_weighting=mode.class_weighting,
        epochs=training.epochs,
        batch_size=training.batch_size,
        optimizer=training.optimizer,
        lr=training.lr,
        weight_decay=training.weight_decay,
        amsgrad=training.amsgrad,
        early_stopping_patience=training.early_stopping_patience,
        seed=seed,
        tta=training.tta,
    )


def expand_arms(config: StudyConfig, arms_dir: str | Path) -> list[Arm]:
    """All arms of the study, each after the arm it is initialised from.

    `init_from` names another arm (without seed); the arm of the same seed runs first and
    its `checkpoint.pt` (best validation loss) becomes this arm's starting weights.
    """
    from dataclasses import replace

    from leukaug.models import model_info

    arms_dir = Path(arms_dir).resolve()
    combos = _grid(config)
    names = {arm_name(*combo): combo for combo in combos}
    arms: list[Arm] = []
    for seed in config.study.seeds:
        for name, (model, augmentation, regime) in names.items():
            spec = _spec(config, model, augmentation, regime, seed)
            source = config.regimes[regime].init_from
            depends_on = None
            if source is not None:
                if source not in names:
                    raise ConfigError(
                        f"regimes.{regime}.init_from: " + unknown_name_message("arm", source, names)
                    )
                if source == name:
                    raise ConfigError(
                        f"regimes.{regime}.init_from: arm {name!r} cannot start from itself."
                    )
                source_model = config.model_name(names[source][0])
                if source_model != spec.model:
                    raise ConfigError(
                        f"regimes.{regime}.init_from: arm {name!r} ({spec.model}) cannot start "
                        f"from {source!r}, a {source_model}."
                    )
                depends_on = arm_id(source, seed)
                spec = replace(spec, init_from=str(arms_dir / depends_on / "checkpoint.pt"))
            size = spec.image_size or _input_size(model_info(spec.model))
            arms.append(Arm(arm_id(name, seed), name, spec, size, depends_on))
    for shape in {
        (a.spec.model, a.spec.head, a.image_size, a.spec.regime, a.spec.freeze_first) for a in arms
    }:
        _dry_build(*shape)
    baseline = config.study.baseline
    if baseline is not None and baseline not in names:
        raise ConfigError("study.baseline: " + unknown_name_message("arm", baseline, names))
    return topological_order(arms)


def _dry_build(model: str, head: str, image_size: int, regime: str, freeze_first: int) -> None:
    """Build the architecture on the meta device (no memory, no weights) and apply the regime,
    so an impossible combination fails before any arm runs."""
    import torch

    from leukaug.models import apply_regime, get_model

    with torch.device("meta"):
        try:
            apply_regime(get_model(model, head=head, image_size=image_size), regime, freeze_first)
        except ConfigError as error:
            raise ConfigError(
                f"model {model!r} at {image_size} px with regime {regime!r}: {error}"
            ) from None


def _input_size(info: Any) -> int:
    size = info.input_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def topological_order(arms: Sequence[Arm]) -> list[Arm]:
    """Arms in their given order, except that every arm comes after its `depends_on`."""
    by_id = {arm.arm_id: arm for arm in arms}
    ordered: list[Arm] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(arm: Arm) -> None:
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


def dependents(arms: Sequence[Arm], roots: set[str]) -> set[str]:
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


def stale_arms(arms: Sequence[Arm], arms_dir: Path) -> list[str]:
    """Arm folders that hold another config hash than this study asks for."""
    stale = []
    for arm in arms:
        previous = atomic.read_json(arms_dir / arm.arm_id / "arm.json")
        if previous is not None and previous.get("config_hash") != arm.spec.config_hash():
            stale.append(arm.arm_id)
    return stale


def foreign_arms(arms: Sequence[Arm], arms_dir: Path) -> list[str]:
    """Arm folders that this study does not have (the report would include them)."""
    if not arms_dir.is_dir():
        return []
    ours = {arm.arm_id for arm in arms}
    return sorted(p.name for p in arms_dir.iterdir() if p.is_dir() and p.name not in ours)


def check_resume(arms: Sequence[Arm], out_dir: Path, *, force: bool) -> set[str]:
    """Arm folders to delete before the run: those holding another configuration (and
    the arms initialised from them) and those not in this study. Without `force`, any of
    them is a ConfigError."""
    stale = stale_arms(arms, out_dir / "arms")
    foreign = foreign_arms(arms, out_dir / "arms")
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
    previous = atomic.read_json(out_dir / DATASET_FILE)
    arms_dir = out_dir / "arms"
    has_arms = arms_dir.is_dir() and any(arms_dir.iterdir())
    if previous is None or not has_arms:
        return False
    if previous.get("split_fingerprint") == info["split_fingerprint"]:
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
    for identifier in sorted(arm_ids):
        folder = out_dir / "arms" / identifier
        if folder.exists():
            shutil.rmtree(folder)


def remove_interrupted_writes(folder: Path) -> None:
    """Delete temporary files that a killed process left (`leukaug.atomic` names them
    `.<name>.<random>.tmp`; the finished file is never one of them)."""
    if folder.is_dir():
        for path in folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- one arm


def write_error(
    folder: Path, arm: Arm, error: BaseException, error_type: str | None = None
) -> ArmOutcome:
    """Record a failed arm in its folder (`error.json`) and return its outcome."""
    message = str(error) or type(error).__name__
    record = {
        "arm_id": arm.arm_id,
        "name": arm.name,
        "error_type": error_type or type(error).__name__,
        "message": message,
        "traceback": "".join(traceback.format_exception(error)),
        "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic.write_json(folder / ERROR_FILE, record)
    return ArmOutcome(
        arm.arm_id, arm.name, "failed", error_type=record["error_type"], message=message
    )


def dependency_failed(arm: Arm, out_dir: Path) -> ArmOutcome:
    error = RuntimeError(f"arm {arm.depends_on!r}, whose checkpoint this arm starts from, failed")
    return write_error(out_dir / "arms" / arm.arm_id, arm, error, "DependencyFailed")


@dataclass
class ArmJob:
    """Everything a worker needs to run arms of one study (picklable, for Ray)."""

    out_dir: Path
    manifest: pd.DataFrame
    cache_dir: Path
    crop: float | None
    device: str = "auto"

    def cache(self, size: int) -> ImageCache:
        from leukaug.data.cache import load_or_build_cache

        return load_or_build_cache(self.manifest, size, self.cache_dir, crop=self.crop)

    def run(
        self,
        arm: Arm,
        *,
        progress: Progress | None = None,
        cache: ImageCache | None = None,
        reraise: Callable[[BaseException], bool] | None = None,
    ) -> ArmOutcome:
        """Run one arm; any failure becomes its `error.json` (re-raised when `reraise` says so)."""
        import time

        from leukaug.arm import run_arm

        folder = self.out_dir / "arms" / arm.arm_id
        (folder / ERROR_FILE).unlink(missing_ok=True)
        remove_interrupted_writes(folder)
        started = time.perf_counter()
        try:
            result = run_arm(
                arm.spec,
                self.manifest,
                cache if cache is not None else self.cache(arm.image_size),
                folder,
                arm_id=arm.arm_id,
                name=arm.name,
                device=self.device,
                progress=progress,
            )
        except Exception as error:
            _release_accelerator_memory()
            outcome = write_error(folder, arm, error)
            if reraise is not None and reraise(error):
                raise
            return outcome
        status = "skipped" if result.skipped else "complete"
        return ArmOutcome(
            arm.arm_id, arm.name, status, time.perf_counter() - started, dict(result.metrics)
        )


def _release_accelerator_memory() -> None:
    """After an out-of-memory error the next arm should start with a clean device."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the study


def resolved_config(
    config: StudyConfig, data: PreparedData | None, executor: str
) -> dict[str, Any]:
    """The config as run: defaults filled in, data paths absolute, the executor used."""
    resolved = config.to_dict()
    if data is not None:
        if config.data.embedded:
            resolved["data"]["dir"] = data.info["root"]
        else:
            resolved["data"]["source"] = data.info["root"]
        resolved["data"]["cache_dir"] = str(data.cache_dir)
    resolved["executor"]["kind"] = executor
    return resolved


def write_study_file(path: Path, resolved: dict[str, Any], source: str | None) -> None:
    header = [
        f"# Resolved study, written by leukaug {__version__}"
        + (f" from {source}" if source else "")
        + ".",
        "# Running `leukaug run` on this file into the same folder resumes the study.",
        "",
    ]
    atomic.write_text(path, "\n".join(header) + "\n" + dump_toml(resolved))


def run_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    device: str | None = None,
    source: str | None = None,
    console: Console | None = None,
    on_arm_done: Callable[[ArmOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> StudyResult:
    """Run (or resume) every arm of `config` into `out_dir`, then build the report."""
    from leukaug import executors

    out_dir = Path(out_dir).resolve()
    executor = executor or config.executor.kind
    executors.require(executor)
    if device is not None:  # the same check as the study file's device
        config = parse_study(
            config.to_dict() | {"study": config.study.model_dump() | {"device": device}}, "--device"
        )
    arms = expand_arms(config, out_dir / "arms")
    restart = check_resume(arms, out_dir, force=force)

    data = prepare_data(config, [arm.image_size for arm in arms], console)
    if check_data_unchanged(out_dir, data.info, force=force):
        restart = {arm.arm_id for arm in arms}
    reset_arms(out_dir, restart)
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, out_dir / "figures"):
        remove_interrupted_writes(folder)
    write_study_file(out_dir / STUDY_FILE, resolved_config(config, data, executor), source)
    atomic.write_json(out_dir / DATASET_FILE, data.info)
    render_figures(data, arms, out_dir)

    if on_start is not None:
        on_start(len(arms))
    job = ArmJob(out_dir, data.manifest, data.cache_dir, data.crop, config.study.device)
    outcomes = executors.run_arms(
        executor,
        arms,
        job,
        caches=data.caches,
        settings=config.executor,
        address=ray_address,
        progress=progress,
        on_arm_done=on_arm_done,
    )
    report: dict[str, Path] = {}
    finished = [o for o in outcomes if not o.failed]
    if finished:
        from leukaug.report import build_report

        baseline = report_baseline(config, arms, outcomes, console)
        report = build_report(out_dir, baseline=baseline)
    elif console is not None:
        console.print("No arm finished, so there is no report.")
    return StudyResult(out_dir, outcomes, report)


def report_baseline(
    config: StudyConfig,
    arms: Sequence[Arm],
    outcomes: Sequence[ArmOutcome],
    console: Console | None = None,
) -> str | None:
    """The configured baseline if one of its seeds finished; otherwise the report's default
    (the first unaugmented arm), or else the first finished arm, with a warning."""
    finished = [o.name for o in outcomes if not o.failed]
    wanted = config.study.baseline
    if wanted is None or wanted in finished:
        return wanted
    by_name = {arm.name: arm for arm in arms}
    fallback = next((n for n in finished if not by_name[n].spec.augmentations), finished[0])
    if console is not None:
        console.print(
            f"[yellow]The baseline arm {wanted!r} failed; the report compares against "
            f"{fallback!r} instead.[/]"
        )
    return fallback
