"""Augmentation names, defaults and parameter checks without torch: one check, used by the
study file (`check_augmentations`) and by the transforms the augmenter is built from."""

from __future__ import annotations

import pytest

from leukaug.augment import (
    AUGMENTATIONS,
    TRANSFORMS,
    Augmentation,
    AugmentationSpec,
    build_augmenter,
    check_augmentations,
    register,
)
from leukaug.core.errors import ConfigError

BAD_ARMS = [
    ([AugmentationSpec("rotat")], {}),
    ([AugmentationSpec("rotate", {"angle": 3})], {}),
    ([AugmentationSpec("flip_rotate", {"degrees": 400})], {}),
    ([AugmentationSpec("blur", {"kernel_size": 4})], {}),
    ([AugmentationSpec("noise", {"std": [0.3, 0.1]})], {}),
    ([AugmentationSpec("zoom", {"isotropic": "yes"})], {}),
    ([AugmentationSpec("brightness", {"brightness": 2, "contrast": 2})], {}),
    ([AugmentationSpec("cutout", {"count": 0})], {}),
    ([AugmentationSpec("border", {"width": [0.1, 0.2, 0.3]})], {}),
    ([AugmentationSpec("stain", {"strength": "medium"})], {}),
    ([AugmentationSpec("hsv", {"hue": 0.7})], {}),
    ([AugmentationSpec("flip"), AugmentationSpec("flip")], {}),
    ([AugmentationSpec("flip")], {"p": 1.5}),
    ([AugmentationSpec("flip")], {"mode": "sometimes"}),
]


def test_every_augmentation_has_a_transform_and_every_transform_settings():
    assert TRANSFORMS.names() == AUGMENTATIONS.names()


@pytest.mark.parametrize(("specs", "options"), BAD_ARMS)
def test_the_torch_free_check_says_what_the_augmenter_says(specs, options):
    with pytest.raises(ConfigError) as checked:
        check_augmentations(specs, **options)
    with pytest.raises(ConfigError) as built:
        build_augmenter(specs, **options)
    assert str(checked.value) == str(built.value)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_a_transform_holds_what_its_check_returned(name):
    params = dict(AUGMENTATIONS.get(name).defaults)
    transform = TRANSFORMS.get(name)(**params)
    settings = AUGMENTATIONS.get(name).settings(params)
    assert {key: getattr(transform, key) for key in settings} == settings
    assert transform.params == AUGMENTATIONS.get(name).defaults


def test_a_transform_without_settings_is_refused():
    class Unknown(Augmentation):
        name = "no_such_augmentation"

    with pytest.raises(ValueError, match=r"no entry in leukaug\.augment\.settings"):
        register(Unknown)
