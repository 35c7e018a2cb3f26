"""Arm kinds: the ways one arm turns its spec into the ordinary arm folder, and what each
kind needs of a spec. Names and checks only (no torch), so the study file can be validated
without the training stack; `leukaug.arm.dispatch.RUNNERS` runs each kind.

Every kind writes the same folder (`arm.json`, `predictions.csv` with the standard columns,
`metrics.json`), so the plan, the executors, the statistics and the report treat every
kind alike:

- `single`: one network (`leukaug.arm.single.run_arm`);
- `bagged_regions`: one network per cell region, bagged (`leukaug.arm.bagged`);
- `features`: cell features + gradient boosting, no CNN (`leukaug.arm.features_arm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from leukaug.arm.spec import ArmSpec
from leukaug.core.errors import ConfigError, unknown_name_message
from leukaug.core.registry import Registry
from leukaug.data.choices import QUADRANTS, REGION_NAMES

SINGLE = "single"
FEATURES_MODEL = "features_gbm"  # the model name of a `features` arm
REGION_GROUPS = {"quadrants": QUADRANTS}  # a name that stands for several regions


@dataclass(frozen=True)
class ArmKind:
    """One way to run an arm. `model`: the one model name of a kind that trains no network
    (its arms' `model`); None: the arm's model is a network of the model registry. The
    function that runs it is `leukaug.arm.dispatch.RUNNERS[name]`."""

    summary: str
    model: str | None = None

    @property
    def cnn(self) -> bool:
        """Trains networks: image size, regimes and Grad-CAM apply."""
        return self.model is None


ARM_KINDS: Registry[ArmKind] = Registry("arm kind")
ARM_KINDS.add(SINGLE, ArmKind("one network (the default)"))
ARM_KINDS.add("bagged_regions", ArmKind("one network per cell region, bagged"))
ARM_KINDS.add("features", ArmKind("cell features + gradient boosting", model=FEATURES_MODEL))


# --------------------------------------------------------------------------- checks


def expand_regions(regions: Sequence[str]) -> tuple[str, ...]:
    """Region names with `quadrants` spelled out; unknown or repeated names -> ConfigError."""
    expanded: list[str] = []
    for region in regions:
        if region not in REGION_NAMES and region not in REGION_GROUPS:
            raise ConfigError(
                unknown_name_message("region", region, [*REGION_NAMES, *REGION_GROUPS])
            )
        expanded += REGION_GROUPS.get(region, (region,))
    repeated = sorted({r for r in expanded if expanded.count(r) > 1})
    if repeated:
        raise ConfigError(f"regions {list(regions)} name {', '.join(repeated)} more than once.")
    return tuple(expanded)


def check_kind_options(kind: str, model: str, regions: Sequence[str], stacker: str) -> None:
    """The options of a kind that the study file sets on a model (`kind`, `regions`, `stacker`)."""
    entry = ARM_KINDS.get(kind)
    if kind == "bagged_regions":
        if not regions:
            raise ConfigError(
                "kind = 'bagged_regions' needs regions, e.g. regions = "
                '["quadrants", "nucleus", "perimeter"].'
            )
        expand_regions(regions)
    elif regions:
        raise ConfigError(f"regions only apply to kind = 'bagged_regions', not {kind!r}.")
    elif stacker != "mean":
        raise ConfigError(f"stacker only applies to kind = 'bagged_regions', not {kind!r}.")
    if entry.model is not None and model != entry.model:
        raise ConfigError(
            f"kind = {kind!r} trains no network: its model is {entry.model!r}, not {model!r}."
        )


def check_spec(spec: ArmSpec) -> None:
    """What a kind needs of a whole spec (beyond `check_kind_options`); ConfigError otherwise."""
    check_kind_options(spec.kind, spec.model, spec.regions, spec.stacker)
    if ARM_KINDS.get(spec.kind).cnn:
        return
    if spec.image_size is None:
        raise ConfigError(
            f"kind = {spec.kind!r} needs an image size (training.image_size or the model's "
            "image_size): its features are measured on the cached cells at that size."
        )
    ignored = {  # network settings a classifier of features cannot honour
        "regime": (spec.regime, "full"),
        "init_from": (spec.init_from, None),
        "pretrained": (spec.pretrained, False),
        "class_weighting": (spec.class_weighting, "balanced"),  # it always balances
    }
    for key, (value, allowed) in ignored.items():
        if value != allowed:
            raise ConfigError(
                f"kind = {spec.kind!r} trains no network, so {key} = {value!r} would be "
                f"ignored; use {allowed!r} (the study's default)."
            )
