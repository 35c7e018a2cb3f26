"""Augmentation registry: name -> batched, per-sample, seeded transform (kornia).

from leukaug.augment import AugmentationSpec, build_augmenter
augmenter = build_augmenter([AugmentationSpec("flip"), AugmentationSpec("rotate")], p=0.33)
images = augmenter(images, generator)  # float (B, 3, H, W) in [0, 1], any device
augmenter.last_draw.for_sample(0)      # what happened to sample 0

Names, defaults and parameter checks (`settings`) need no torch; the transforms and the
augmenter load their modules on first use (PEP 562), so validating a study file does not
import torch or kornia.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from leukaug.augment.settings import (
    AUGMENTATIONS,
    DEFAULT_P,
    MODES,
    AugmentationInfo,
    AugmentationSpec,
    check_augmentations,
    list_augmentations,
    parse_augmentations,
)

if TYPE_CHECKING:
    from leukaug.augment.augmenter import Augmenter, Draw, DrawGroup, build_augmenter
    from leukaug.augment.transforms import TRANSFORMS, Augmentation, register

_MODULE_OF = {
    "Augmentation": "leukaug.augment.transforms",
    "TRANSFORMS": "leukaug.augment.transforms",
    "register": "leukaug.augment.transforms",
    "Augmenter": "leukaug.augment.augmenter",
    "Draw": "leukaug.augment.augmenter",
    "DrawGroup": "leukaug.augment.augmenter",
    "build_augmenter": "leukaug.augment.augmenter",
}
__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_P",
    "MODES",
    "TRANSFORMS",
    "Augmentation",
    "AugmentationInfo",
    "AugmentationSpec",
    "Augmenter",
    "Draw",
    "DrawGroup",
    "build_augmenter",
    "check_augmentations",
    "list_augmentations",
    "parse_augmentations",
    "register",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
