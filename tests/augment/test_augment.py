"""Augmentation registry: every entry is checked for identity at p = 0, its intended effect
at p = 1, the share of changed samples, seeding, value range and a batch of one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leukaug.augment import (
    AugmentationSpec,
    build_augmenter,
    list_augmentations,
    parse_augmentations,
)
from leukaug.augment.preview import render_preview
from leukaug.augment.stain import rgb_to_hed
from leukaug.augment.transforms import build_transform
from leukaug.core.errors import ConfigError

NAMES = list_augmentations()
SIZE = 32


def random_images(n: int = 4, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def cell_images(n: int = 4, size: int = SIZE) -> torch.Tensor:
    """Purple disks (a 'cell') centred on black."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = ((ys - size / 2 + 0.5) ** 2 + (xs - size / 2 + 0.5) ** 2) < (size / 3) ** 2
    colour = torch.tensor([0.55, 0.35, 0.75]).view(3, 1, 1)
    return (disk * colour).expand(n, 3, size, size).clone()


def augment(name: str, images: torch.Tensor, seed: int = 0, p: float = 1.0, **params):
    augmenter = build_augmenter([AugmentationSpec(name, params)], p=p)
    return augmenter(images, torch.Generator().manual_seed(seed)), augmenter


def high_frequency_energy(images: torch.Tensor) -> float:
    return float((images[..., 1:, :] - images[..., :-1, :]).pow(2).mean())


# One check per registered augmentation: p = 1 changes the image the intended way.
def check_hflip(x, y, _):
    assert torch.equal(y, torch.flip(x, dims=[-1]))


def check_vflip(x, y, _):
    assert torch.equal(y, torch.flip(x, dims=[-2]))


def check_flip(x, y, augmenter):
    axes = augmenter.last_draw.groups[0].params[0]["axes"]
    for i in range(len(x)):
        expected = {0: [-1], 1: [-2], 2: [-2, -1]}[int(axes[i])]
        assert torch.equal(y[i], torch.flip(x[i], dims=expected))


def check_rotate(x, y, _):
    # A 90-degree rotation keeps the pixel multiset of a centred square.
    square = torch.zeros(1, 3, SIZE, SIZE)
    square[..., 8:24, 8:24] = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    rotated, _ = augment("rotate", square, degrees=[90, 90])
    assert not torch.allclose(rotated, square)
    torch.testing.assert_close(
        rotated.flatten().sort().values, square.flatten().sort().values, atol=1e-4, rtol=0
    )
    assert torch.allclose(
        rotated[0, :, 8:24, 8:24], torch.rot90(square[0, :, 8:24, 8:24], 1, dims=(1, 2)), atol=1e-4
    ) or torch.allclose(
        rotated[0, :, 8:24, 8:24], torch.rot90(square[0, :, 8:24, 8:24], -1, dims=(1, 2)), atol=1e-4
    )


def check_flip_rotate(x, y, augmenter):
    params = augmenter.last_draw.groups[0].params[0]
    assert set(params) == {"axes", "angle"}
    assert not torch.allclose(y, x)


def check_blur(x, y, _):
    assert high_frequency_energy(y) < 0.7 * high_frequency_energy(x)  # sigma 0.44 px at 32 px
    torch.testing.assert_close(y.mean(), x.mean(), atol=0.02, rtol=0)


def check_noise(x, y, _):
    grey = torch.full((4, 3, 64, 64), 0.5)
    noisy, _ = augment("noise", grey, std=0.1)
    assert abs(float((noisy - grey).std()) - 0.1) < 0.005


def check_shift(x, y, augmenter):
    cells = cell_images(1)
    shifted, _ = augment("shift", cells, fraction=[0.2, 0.2])
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    mask_before, mask_after = cells[0, 0] > 0.2, shifted[0, 0] > 0.2
    dx = xs[mask_after].float().mean() - xs[mask_before].float().mean()
    dy = ys[mask_after].float().mean() - ys[mask_before].float().mean()
    assert abs(float(dx) - 0.2 * SIZE) < 1.5 and abs(float(dy) - 0.2 * SIZE) < 1.5


def check_zoom(x, y, _):
    cells = cell_images(1)
    bigger, _ = augment("zoom", cells, range=[1.5, 1.5])
    smaller, _ = augment("zoom", cells, range=[0.6, 0.6])
    area = float((cells[0, 0] > 0.2).sum())
    assert float((bigger[0, 0] > 0.2).sum()) > 1.8 * area
    assert float((smaller[0, 0] > 0.2).sum()) < 0.5 * area


def check_brightness(x, y, augmenter):
    params = augmenter.last_draw.groups[0].params[0]
    grey = torch.full((1, 3, 8, 8), 0.5)
    brighter, _ = augment("brightness", grey, brightness=[0.1, 0.1], contrast=0.0)
    torch.testing.assert_close(brighter, grey + 0.1)
    assert set(params) == {"brightness", "contrast"}


def check_cutout(x, y, _):
    changed = (y != x).any(dim=1)
    for i in range(len(x)):
        assert changed[i].any()
        assert torch.all(y[i][:, changed[i]] == 0.0)  # filled with black
        for coords in changed[i].nonzero(as_tuple=True):  # one square of side 0.25
            assert int(coords.max() - coords.min()) + 1 <= math.ceil(0.25 * SIZE)


def check_border(x, y, augmenter):
    width = augmenter.last_draw.groups[0].params[0]["width"]
    for i in range(len(x)):
        px = math.floor(float(width[i]) * SIZE)
        if px > 0:
            assert torch.all(y[i, :, :px, :] == 1.0) and torch.all(y[i, :, :, -px:] == 1.0)
    inner = slice(4, SIZE - 4)  # inside the widest frame (0.1 * 32 px)
    assert not torch.any(y[:, :, inner, inner] == 1.0)  # the image itself is shrunk, not painted


def check_stain(x, y, _):
    for strength in ("light", "strong"):
        cells = cell_images(8)
        jittered, _ = augment("stain", cells, strength=strength)
        background = cells.amax(dim=1) < 0.05
        assert torch.equal(jittered.amax(dim=1) < 0.05, background)  # geometry unchanged
        change = (rgb_to_hed(jittered) - rgb_to_hed(cells)).abs()[:, :, ~background[0]]
        assert float(change.mean()) > 0.005
    zero_jitter = {"scale": torch.zeros(8, 3), "shift": torch.zeros(8, 3)}
    unchanged = build_transform(AugmentationSpec("stain")).apply(cells, zero_jitter)
    torch.testing.assert_close(unchanged, cells, atol=1e-5, rtol=0)


def check_hsv(x, y, _):
    from kornia.color import rgb_to_hsv

    cells = cell_images(4)
    shifted, _ = augment("hsv", cells, hue=[0.2, 0.2], saturation=0.0, value=0.0)
    inside = cells.amax(dim=1) > 0.2
    hue_before, hue_after = rgb_to_hsv(cells)[:, 0][inside], rgb_to_hsv(shifted)[:, 0][inside]
    delta = torch.remainder(hue_after - hue_before, 2 * math.pi)
    torch.testing.assert_close(delta, torch.full_like(delta, 0.2 * 2 * math.pi), atol=1e-3, rtol=0)


INTENDED = {
    name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")
}


def test_every_augmentation_has_an_intended_effect_check():
    assert sorted(INTENDED) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_p0_is_identity(name):
    images = random_images()
    out, _ = augment(name, images, p=0.0)
    assert torch.equal(out, images)


@pytest.mark.parametrize("name", NAMES)
def test_p1_changes_the_image_as_intended(name):
    images = random_images()
    out, augmenter = augment(name, images)
    assert out.shape == images.shape and out.dtype == images.dtype
    INTENDED[name](images, out, augmenter)


@pytest.mark.parametrize("name", NAMES)
def test_share_of_changed_samples_is_close_to_p(name):
    images = random_images(300)
    out, augmenter = augment(name, images, p=0.33)
    changed = (out != images).flatten(1).any(dim=1)
    selected = augmenter.last_draw.groups[0].selected
    assert torch.equal(changed, selected)  # exactly the drawn samples change
    assert abs(float(changed.float().mean()) - 0.33) < 0.08


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_batch_and_values_in_range(name):
    images = random_images(6)
    first, _ = augment(name, images, seed=7, p=0.5)
    second, _ = augment(name, images, seed=7, p=0.5)
    other, _ = augment(name, images, seed=8, p=0.5)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(images, random_images(6))  # the input is not modified


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_and_readable_parameters(name):
    out, augmenter = augment(name, random_images(1))
    assert out.shape == (1, 3, SIZE, SIZE)
    assert name in augmenter.last_draw.for_sample(0)


def test_empty_specs_are_identity():
    images = random_images()
    augmenter = build_augmenter([])
    assert augmenter(images, torch.Generator()) is images


def test_together_mode_applies_all_to_the_same_samples():
    images = random_images(200)
    augmenter = build_augmenter([AugmentationSpec("hflip"), AugmentationSpec("noise")], p=0.5)
    out = augmenter(images, torch.Generator().manual_seed(0))
    assert len(augmenter.last_draw.groups) == 1
    selected = augmenter.last_draw.groups[0].selected
    assert torch.equal(out[~selected], images[~selected])
    assert set(augmenter.last_draw.for_sample(int(selected.nonzero()[0]))) == {"hflip", "noise"}


def test_independent_mode_draws_each_augmentation_separately():
    images = random_images(400)
    augmenter = build_augmenter(
        [AugmentationSpec("hflip"), AugmentationSpec("noise")], p=0.5, mode="independent"
    )
    out = augmenter(images, torch.Generator().manual_seed(0))
    hflip, noise = (group.selected for group in augmenter.last_draw.groups)
    changed = (out != images).flatten(1).any(dim=1)
    assert torch.equal(changed, hflip | noise)
    assert abs(float(changed.float().mean()) - 0.75) < 0.08


def test_blur_scales_with_image_size():
    # sigma 3.5 px at 256 px: 1.75 px at 128 px blurs far more than 0.44 px at 32 px.
    ratios = []
    for size in (32, 128):
        images = random_images(2, size)
        blurred, _ = augment("blur", images)
        ratios.append(high_frequency_energy(blurred) / high_frequency_energy(images))
    assert ratios[1] < 0.1 < ratios[0]


def test_validation_messages():
    with pytest.raises(ConfigError, match="Did you mean 'rotate'"):
        build_augmenter([AugmentationSpec("rotat")])
    with pytest.raises(ConfigError, match="valid parameters: degrees"):
        build_augmenter([AugmentationSpec("rotate", {"angle": 3})])
    with pytest.raises(ConfigError, match="std"):
        build_augmenter([AugmentationSpec("noise", {"std": -1})])
    with pytest.raises(ConfigError, match="light, strong"):
        build_augmenter([AugmentationSpec("stain", {"strength": "medium"})])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        build_augmenter([AugmentationSpec("flip")], p=1.5)
    with pytest.raises(ConfigError, match="mode"):
        build_augmenter([AugmentationSpec("flip")], mode="sometimes")
    with pytest.raises(ConfigError, match="twice"):
        build_augmenter([AugmentationSpec("flip"), AugmentationSpec("flip")])
    with pytest.raises(ConfigError, match="built for 64 px"):
        build_augmenter([AugmentationSpec("flip")], image_size=64)(
            random_images(), torch.Generator()
        )


def test_parse_augmentations_and_spec_round_trip():
    specs = parse_augmentations("flip, rotate:degrees=90,stain:strength=strong,zoom:range=0.8..1.2")
    assert specs == (
        AugmentationSpec("flip"),
        AugmentationSpec("rotate", {"degrees": 90}),
        AugmentationSpec("stain", {"strength": "strong"}),
        AugmentationSpec("zoom", {"range": [0.8, 1.2]}),
    )
    assert parse_augmentations("none") == ()
    assert specs[1].to_dict() == {"name": "rotate", "params": {"degrees": 90}}
    assert len({*specs, *specs}) == 4  # hashable
    with pytest.raises(ConfigError, match="key=value"):
        parse_augmentations("rotate:90")


def test_render_preview_writes_a_png(tmp_path):
    images = (np.random.default_rng(0).random((2, 24, 24, 3)) * 255).astype(np.uint8)
    path = render_preview(
        images,
        [0, 1],
        [AugmentationSpec("flip"), AugmentationSpec("stain", {"strength": "strong"})],
        tmp_path / "fig.png",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
