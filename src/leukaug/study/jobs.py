"""The units of a study's work: `StudyArm` (one planned arm), `ArmJob` (runs arms of one
study, picklable for Ray), `ArmOutcome` (what happened) and the arm's `error.json`.

Executors and the study both build on this module; it knows nothing of either.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from leukaug.arm.callbacks import TrainingCallbacks
from leukaug.arm.context import ArmContext, RunSettings
from leukaug.arm.determinism import arm_execution
from leukaug.arm.kinds import ARM_KINDS
from leukaug.arm.spec import ArmSpec
from leukaug.core import atomic
from leukaug.core.errors import ConfigError, StorageError, masked_interrupt
from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.core.lock import FolderLocked, folder_lock
from leukaug.data.cache import ImageCache, load_or_build_cache
from leukaug.study.study_file import StudyConfig

STATUS_COMPLETE = "complete"
STATUS_SKIPPED = "skipped"  # already complete before this run
STATUS_FAILED = "failed"
DEPENDENCY_FAILED = "DependencyFailed"  # error_type of an arm whose source arm failed


@dataclass(frozen=True)
class StudyArm:
    """One unit of work: a spec, where it goes, and the arm it starts from (if any)."""

    arm_id: str  # folder name: "<name>-s<seed>", "<name>-s<seed>-f<fold>" with cv_folds
    name: str  # the arm without its seed: "<model>-<augmentation>-<regime>"
    spec: ArmSpec
    image_size: int
    depends_on: str | None = None  # arm_id whose checkpoint.pt this arm starts from


@dataclass
class ArmOutcome:
    """What happened to one arm in this run (passed to `on_arm_done`)."""

    arm_id: str
    name: str
    status: str  # STATUS_COMPLETE | STATUS_SKIPPED | STATUS_FAILED
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    message: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == STATUS_FAILED


def write_error(
    folder: Path, arm: StudyArm, error: BaseException, error_type: str | None = None
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
    atomic.write_json(ArmFolder(folder).error, record)
    return ArmOutcome(
        arm.arm_id, arm.name, STATUS_FAILED, error_type=record["error_type"], message=message
    )


def read_error(folder: Path, arm: StudyArm) -> ArmOutcome | None:
    """The failed outcome recorded in the arm's `error.json`, or None when there is none."""
    record = atomic.read_json(ArmFolder(folder).error)
    if record is None:
        return None
    return ArmOutcome(
        arm.arm_id,
        arm.name,
        STATUS_FAILED,
        error_type=record.get("error_type"),
        message=record.get("message"),
    )


def dependency_failed(arm: StudyArm, out_dir: Path) -> ArmOutcome:
    """Record that `arm` cannot run because the arm it starts from failed."""
    error = RuntimeError(f"arm {arm.depends_on!r}, whose checkpoint this arm starts from, failed")
    return write_error(StudyFolder(out_dir).arm(arm.arm_id).path, arm, error, DEPENDENCY_FAILED)


def run_settings(config: StudyConfig, crop: float | None) -> RunSettings:
    """The run settings of every arm of a study: its device, [executor] and [tracking]
    sections, and the data's crop (the one place they are read from the config)."""
    return RunSettings(
        device=config.study.device,
        threads=config.executor.threads,
        deterministic=config.executor.deterministic,
        crop=crop,
        tensorboard=config.tracking.tensorboard,
        mlflow_uri=config.tracking.mlflow_uri,
        checkpoint_interval_s=config.executor.checkpoint_interval_s,
    )


def finished_outcome(folder: ArmFolder, arm: StudyArm) -> ArmOutcome | None:
    """The skipped outcome of an arm that an earlier run completed with the same config
    (its Grad-CAM written too), read from its folder without running anything; else None."""
    info = folder.read_info()
    if (
        info is None
        or info.get("config_hash") != arm.spec.config_hash()
        or not folder.is_complete()
        or (not folder.cam_csv.is_file() and wants_cams(arm.spec, folder))
    ):
        return None
    metrics = atomic.read_json(folder.metrics) or {}
    return ArmOutcome(arm.arm_id, arm.name, STATUS_SKIPPED, metrics=metrics)


def wants_cams(spec: ArmSpec, folder: ArmFolder) -> bool:
    """A complete arm gets Grad-CAM artefacts when it trains networks and has test cells."""
    if not ARM_KINDS.get(spec.kind).cnn:
        return False
    predictions = pd.read_csv(folder.predictions, usecols=["split"])
    return bool((predictions["split"] == "test").any())


@dataclass
class ArmJob:
    """Everything a worker needs to run arms of one study (picklable, for Ray)."""

    out_dir: Path  # the study folder; with `single_arm`, the arm's own folder
    manifest: pd.DataFrame
    cache_dir: Path
    settings: RunSettings = field(default_factory=RunSettings)
    single_arm: bool = False  # `leukaug train`: out_dir is the one arm's folder
    # [data] cv_folds: fold -> that fold's split manifest (an arm's spec.fold picks one)
    fold_manifests: dict[int, pd.DataFrame] = field(default_factory=dict)
    background_check: bool = True  # [study]: background_check.csv after each arm

    @property
    def device(self) -> str:
        return self.settings.device

    def with_threads(self, threads: int) -> ArmJob:
        """This job with `threads` CPU threads per arm unless the study set a count."""
        return replace(
            self, settings=replace(self.settings, threads=self.settings.threads or threads)
        )

    def folder(self, arm: StudyArm) -> ArmFolder:
        if self.single_arm:
            return ArmFolder(self.out_dir)
        return StudyFolder(self.out_dir).arm(arm.arm_id)

    def finished(self, arm: StudyArm) -> ArmOutcome | None:
        """The skipped outcome of an arm an earlier run completed with the same config and
        its extras written, read from its folder without running anything; else None."""
        folder = self.folder(arm)
        if self.background_check and not folder.background_check_csv.is_file():
            return None
        return finished_outcome(folder, arm)

    def cache(self, size: int) -> ImageCache:
        return load_or_build_cache(self.manifest, size, self.cache_dir, crop=self.settings.crop)

    def manifest_for(self, spec: ArmSpec) -> pd.DataFrame:
        """The split manifest an arm trains and predicts on: its fold's, else the study's."""
        if spec.fold is None:
            return self.manifest
        if spec.fold not in self.fold_manifests:
            raise ConfigError(
                f"the arm is planned for cross-validation fold {spec.fold}, but the study's "
                f"data have folds {sorted(self.fold_manifests)}; check data.cv_folds."
            )
        return self.fold_manifests[spec.fold]

    def run(
        self,
        arm: StudyArm,
        *,
        cache: ImageCache | None = None,
        reraise: Callable[[BaseException], bool] | None = None,
        callbacks: TrainingCallbacks | None = None,
    ) -> ArmOutcome:
        """Run one arm holding its folder's lock: a second worker on the same arm (a Ray
        retry while the first attempt still runs) fails at once and leaves the folder alone."""
        folder = self.folder(arm)
        try:
            with folder_lock(folder.path, "arm folder"):
                return self._run(arm, cache=cache, reraise=reraise, callbacks=callbacks)
        except FolderLocked as error:
            return ArmOutcome(
                arm.arm_id, arm.name, STATUS_FAILED, error_type="FolderLocked", message=str(error)
            )

    def _run(
        self,
        arm: StudyArm,
        *,
        cache: ImageCache | None = None,
        reraise: Callable[[BaseException], bool] | None = None,
        callbacks: TrainingCallbacks | None = None,
    ) -> ArmOutcome:
        """Run one arm; any failure becomes its `error.json` (re-raised when `reraise` says so)."""
        folder = self.folder(arm)
        folder.error.unlink(missing_ok=True)
        folder.remove_interrupted_writes()
        started = time.perf_counter()
        context = ArmContext(folder.path, arm.arm_id, arm.name, self.settings, callbacks)
        # imported here: a study whose arms are all complete never loads the training stack
        from leukaug.arm import dispatch
        from leukaug.arm.lifecycle import run_optional
        from leukaug.trained import arm_background, arm_cams

        try:
            with arm_execution(folder.path, self.settings.threads, self.settings.deterministic):
                job_cache = cache if cache is not None else self.cache(arm.image_size)
                result = dispatch.run_any_arm(  # dispatches on arm.spec.kind (arm.kinds.ARM_KINDS)
                    arm.spec, self.manifest_for(arm.spec), job_cache, context=context
                )
                # also for an arm completed earlier without them
                if not folder.cam_csv.is_file() and wants_cams(arm.spec, folder):
                    run_optional(  # an extra: its failure is recorded, the arm stays complete
                        folder,
                        "cams",
                        lambda: arm_cams.write_arm_cams(folder, arm.spec, job_cache, self.device),
                    )
                check_file = folder.background_check_csv
                if self.background_check and not check_file.is_file():
                    run_optional(  # an extra, like the CAMs
                        folder,
                        "background_check",
                        lambda: arm_background.write_background_check(
                            folder, arm.spec, self.manifest_for(arm.spec), job_cache, self.device
                        ),
                    )
        except Exception as error:
            release_accelerator_memory()
            if (interrupt := masked_interrupt(error)) is not None:
                raise interrupt from None  # stopped, not failed: the arm resumes on a rerun
            if isinstance(error, StorageError) and reraise is None:
                raise  # a full disk stops the study: every later arm needs the disk too
            outcome = write_error(folder.path, arm, error)
            if reraise is not None and reraise(error):
                raise
            return outcome
        status = STATUS_SKIPPED if result.skipped else STATUS_COMPLETE
        return ArmOutcome(
            arm.arm_id, arm.name, status, time.perf_counter() - started, dict(result.metrics)
        )


def release_accelerator_memory() -> None:
    """After an out-of-memory error the next arm should start with a clean device."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
