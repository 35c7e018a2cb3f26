"""Running an arm of any kind: `RUNNERS` maps each kind of `leukaug.arm.kinds.ARM_KINDS`
to the function that trains it into the ordinary arm folder (`run_arm`'s signature).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from leukaug.arm.bagged import run_bagged_regions
from leukaug.arm.features_arm import run_features
from leukaug.arm.kinds import ARM_KINDS, SINGLE
from leukaug.arm.lifecycle import ArmResult, interrupted_on_storage_error
from leukaug.arm.loop import TrainingCallbacks
from leukaug.arm.single import run_arm
from leukaug.arm.spec import ArmSpec
from leukaug.data.cache import ImageCache


class ArmRunner(Protocol):
    """`run_arm`'s signature (`options`: its further keywords): train and evaluate one arm
    into its folder."""

    def __call__(
        self,
        spec: ArmSpec,
        split_manifest: pd.DataFrame,
        cache: ImageCache,
        out_dir: str | Path,
        *,
        arm_id: str,
        name: str,
        device: str = "auto",
        callbacks: TrainingCallbacks | None = None,
        **options: Any,
    ) -> ArmResult: ...


RUNNERS: dict[str, ArmRunner] = {
    SINGLE: run_arm,
    "bagged_regions": run_bagged_regions,
    "features": run_features,
}


def run_any_arm(
    spec: ArmSpec,
    split_manifest: pd.DataFrame,
    cache: ImageCache,
    out_dir: str | Path,
    *,
    arm_id: str,
    name: str,
    device: str = "auto",
    callbacks: TrainingCallbacks | None = None,
    **options: Any,
) -> ArmResult:
    """Run one arm of any kind (`spec.kind`) into `out_dir`; `options` are `run_arm`'s
    further keywords (crop, trackers), passed to every network the kind trains."""
    ARM_KINDS.get(spec.kind)  # an unknown kind: ConfigError with "did you mean"
    with interrupted_on_storage_error(out_dir):  # a full disk: resumable, not left running
        return RUNNERS[spec.kind](
            spec, split_manifest, cache, out_dir,
            arm_id=arm_id, name=name, device=device, callbacks=callbacks, **options,
        )  # fmt: skip
