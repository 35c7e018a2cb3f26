"""Running an arm of any kind: `RUNNERS` maps each kind of `leukaug.arm.kinds.ARM_KINDS`
to the function that trains it into the ordinary arm folder, all with one signature
(`ArmRunner`): the spec (what the arm is), its data, and its `ArmContext` (where and how).
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from leukaug.arm.bagged import run_bagged_regions
from leukaug.arm.context import ArmContext
from leukaug.arm.features_arm import run_features
from leukaug.arm.kinds import ARM_KINDS, SINGLE
from leukaug.arm.lifecycle import ArmResult, interrupted_on_storage_error
from leukaug.arm.single import run_arm
from leukaug.arm.spec import ArmSpec
from leukaug.data.cache import ImageCache


class ArmRunner(Protocol):
    """Train and evaluate one arm into `context.out_dir`."""

    def __call__(
        self, spec: ArmSpec, split_manifest: pd.DataFrame, cache: ImageCache, context: ArmContext
    ) -> ArmResult: ...


RUNNERS: dict[str, ArmRunner] = {
    SINGLE: run_arm,
    "bagged_regions": run_bagged_regions,
    "features": run_features,
}


def run_any_arm(
    spec: ArmSpec, split_manifest: pd.DataFrame, cache: ImageCache, context: ArmContext
) -> ArmResult:
    """Run one arm of any kind (`spec.kind`) into `context.out_dir`."""
    ARM_KINDS.get(spec.kind)  # an unknown kind: ConfigError with "did you mean"
    with interrupted_on_storage_error(context.out_dir):  # a full disk: resumable, not running
        return RUNNERS[spec.kind](spec, split_manifest, cache, context)
