"""How an arm runs, as opposed to what it is (its `ArmSpec`): `RunSettings` (the device, the
CPU threads, deterministic kernels, the data's crop, trackers, how often the resume state is
written) and `ArmContext` (where the arm goes, its names, the settings and the progress
callbacks). Every arm kind's runner takes `(spec, split_manifest, cache, context)`
(`leukaug.arm.dispatch.ArmRunner`); a study builds its `RunSettings` once
(`leukaug.study.jobs.run_settings`). None of these settings enters the arm's config hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the loop imports torch; building settings needs none
    from leukaug.arm.callbacks import TrainingCallbacks


@dataclass(frozen=True)
class RunSettings:
    """The run settings every arm of one study shares (picklable, for worker processes)."""

    device: str = "auto"
    threads: int | None = None  # CPU threads per arm (None: keep the process's count)
    deterministic: bool = False  # CUDA deterministic kernels
    crop: float | None = None  # the data's central crop, recorded in the model card
    tensorboard: bool = False  # [tracking]: event files in each arm folder
    mlflow_uri: str = ""  # [tracking]: one MLflow run per arm ("" = off)
    checkpoint_interval_s: float | None = None  # resume-state writes (None: auto)


@dataclass(frozen=True)
class ArmContext:
    """One arm's run: its folder, its names, the shared settings, and the callbacks that
    receive its per-batch and per-epoch records (labelled `arm_id`)."""

    out_dir: Path  # the arm's own folder (arms/<arm_id>/ in a study)
    arm_id: str
    name: str
    settings: RunSettings = field(default_factory=RunSettings)
    callbacks: TrainingCallbacks | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    @property
    def device(self) -> str:
        return self.settings.device

    def member(self, part: str) -> ArmContext:
        """The context of a part of this arm (a bagged arm's member) in `<out_dir>/<part>`,
        named `<arm_id>/<last part>`."""
        label = Path(part).name
        return replace(
            self,
            out_dir=self.out_dir / part,
            arm_id=f"{self.arm_id}/{label}",
            name=f"{self.name}/{label}",
        )
