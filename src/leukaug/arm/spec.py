"""An arm's spec: `ArmSpec`, the one source of an arm's settings, its defaults
(`ARM_DEFAULTS`) and allowed values (`CHOICES`). The study file's sections and the
`leukaug train` options derive from them; its hash is the arm's config hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields
from typing import Any

from leukaug.augment import DEFAULT_P, AugmentationSpec
from leukaug.core.errors import ConfigError, unknown_name_message
from leukaug.models import REGIMES, model_info

DEFAULT_LR = 1e-4  # the seed's custom CNN: Adam, lr 1e-4, amsgrad


SGD_MOMENTUM = 0.9  # the usual ImageNet-recipe momentum (torchvision references)
OPTIMIZER_NAMES = ("adam", "adamw", "sgd")  # leukaug.arm.network.OPTIMIZERS builds each


# Allowed values of ArmSpec's enumerated fields (the config and the CLI use these).
CHOICES: dict[str, tuple[str, ...]] = {
    "regime": tuple(REGIMES),
    "class_weighting": ("balanced", "none"),
    "optimizer": OPTIMIZER_NAMES,
    "aug_mode": ("together", "independent"),
    "head": ("linear", "seed"),
    "stacker": ("mean", "logistic"),  # how a bagged_regions arm combines its members
}


# The arm-kind fields (arm_kinds.py), left out of `to_dict` at these defaults: a single
# network's spec and config hash stay what they were before arm kinds existed.
KIND_DEFAULTS: dict[str, Any] = {"kind": "single", "regions": (), "stacker": "mean"}
# Left out of `to_dict` likewise: the kind fields, and the fold (set only by cross-validation).
OMITTED_AT_DEFAULT: dict[str, Any] = {**KIND_DEFAULTS, "fold": None}


def resolve_image_size(model: str, image_size: int | None) -> int:
    """The side the arm trains at: `image_size`, else the model's own input size."""
    return int(image_size) if image_size is not None else int(model_info(model).input_size)


@dataclass(frozen=True)
class ArmSpec:
    """Everything that defines one arm; its hash is the arm's config hash."""

    model: str
    pretrained: bool = False
    weights_path: str | None = None
    head: str = "linear"
    image_size: int | None = None  # None -> model_info(model).input_size
    augmentations: tuple[AugmentationSpec, ...] = ()
    aug_p: float = DEFAULT_P
    aug_mode: str = "together"  # or "independent"
    regime: str = "full"  # "full" | "freeze_first" | "freeze_backbone"
    freeze_first: int = 0
    init_from: str | None = None
    class_weighting: str = "balanced"  # or "none"
    epochs: int = 5
    batch_size: int = 16
    optimizer: str = "adam"  # a key of OPTIMIZERS
    lr: float = DEFAULT_LR
    weight_decay: float = 0.0
    amsgrad: bool = True
    early_stopping_patience: int | None = None
    seed: int = 0
    tta: bool = False
    kind: str = "single"  # a name of arm_kinds.ARM_KINDS: single | bagged_regions | features
    regions: tuple[str, ...] = ()  # bagged_regions: the regions its members see
    stacker: str = "mean"  # bagged_regions: "mean" | "logistic" (fitted on val)
    # [data] cv_folds: the fold whose test part this arm predicts (the study hands the arm
    # that fold's split, data/folds.py); None: the study's one split
    fold: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        object.__setattr__(self, "regions", tuple(self.regions))
        for key, valid in CHOICES.items():
            if getattr(self, key) not in valid:
                raise ConfigError(unknown_name_message(key, str(getattr(self, key)), valid))
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "weight_decay": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "aug_p": 0.0 <= self.aug_p <= 1.0,
            "freeze_first": self.freeze_first >= 0,
            "early_stopping_patience": self.early_stopping_patience is None
            or self.early_stopping_patience >= 1,
            "image_size": self.image_size is None or self.image_size >= 1,
            "fold": self.fold is None or self.fold >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"ArmSpec.{key} = {getattr(self, key)!r} is out of range.")

    @property
    def resolved_image_size(self) -> int:
        """`image_size`, else the model's input size (`resolve_image_size`)."""
        return resolve_image_size(self.model, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; augmentations become [{"name", "params"}]."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["augmentations"] = [
            {"name": a.name, "params": dict(a.params or {})} for a in self.augmentations
        ]
        for key, default in OMITTED_AT_DEFAULT.items():
            if out[key] == default:
                del out[key]
        return out

    def config_hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmSpec:
        """Inverse of `to_dict` (arm.json -> spec)."""
        data = dict(data)
        data["augmentations"] = tuple(
            AugmentationSpec(a["name"], dict(a.get("params") or {}))
            for a in data.get("augmentations", ())
        )
        return cls(**data)


# Every field's default (the model has none): what the config sections and CLI options use.
ARM_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(ArmSpec) if f.name != "model"}
