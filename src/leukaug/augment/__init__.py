"""Augmentation registry: name -> batched, per-sample, seeded transform (kornia).

from leukaug.augment import AugmentationSpec, build_augmenter
augmenter = build_augmenter([AugmentationSpec("flip"), AugmentationSpec("rotate")], p=0.33)
images = augmenter(images, generator)  # float (B, 3, H, W) in [0, 1], any device
augmenter.last_draw.for_sample(0)      # what happened to sample 0
"""

from leukaug.augment import transforms as _transforms  # noqa: F401 - registers the entries
from leukaug.augment.augmenter import (
    AUGMENTATIONS,
    DEFAULT_P,
    MODES,
    Augmentation,
    AugmentationSpec,
    Augmenter,
    Draw,
    DrawGroup,
    build_augmenter,
    list_augmentations,
    parse_augmentations,
    register,
)

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_P",
    "MODES",
    "Augmentation",
    "AugmentationSpec",
    "Augmenter",
    "Draw",
    "DrawGroup",
    "build_augmenter",
    "list_augmentations",
    "parse_augmentations",
    "register",
]
