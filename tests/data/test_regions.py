"""Region crops and masks on cells of known geometry; bagging and the validation-only stacker."""

from __future__ import annotations

import numpy as np
import pytest

from leukaug.core.errors import ConfigError, DataError
from leukaug.data.choices import REGION_NAMES
from leukaug.data.regions import (
    QUADRANTS,
    REGIONS,
    bag_probabilities,
    fit_stacker,
    foreground_mask,
    nucleus_centres,
    nucleus_crop,
    nucleus_mask,
    perimeter_mask,
    perimeter_ring,
    quadrant,
    region_images,
)

SIZE = 64
CYTOPLASM = (150, 170, 220)  # pale blue
NUCLEUS = (80, 40, 120)  # dark purple


def disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def cell(centre=(32, 32), radius=24, nucleus_centre=(26, 36), nucleus_radius=8) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[disc(SIZE, centre, radius)] = CYTOPLASM
    image[disc(SIZE, nucleus_centre, nucleus_radius)] = NUCLEUS
    return image


def test_foreground_and_nucleus_masks_match_the_drawn_discs():
    images = np.stack([cell(), cell(nucleus_centre=(40, 28), nucleus_radius=10)])
    assert np.array_equal(foreground_mask(images)[0], disc(SIZE, (32, 32), 24))
    assert np.array_equal(nucleus_mask(images)[1], disc(SIZE, (40, 28), 10))
    np.testing.assert_allclose(nucleus_centres(images), [[26, 36], [40, 28]], atol=1e-9)


def test_quadrants_tile_the_image():
    images = np.random.default_rng(0).integers(0, 256, (2, 9, 8, 3), dtype=np.uint8)
    parts = {name: quadrant(images, name) for name in QUADRANTS}
    assert all(p.shape == (2, 4, 4, 3) for p in parts.values())
    assert np.array_equal(parts["top_left"], images[:, :4, :4])
    assert np.array_equal(parts["bottom_right"], images[:, 5:, 4:])
    with pytest.raises(ConfigError, match="Did you mean 'top_left'"):
        quadrant(images, "topleft")


def test_nucleus_crop_is_centred_on_the_nucleus_and_stays_inside():
    images = np.stack([cell(), cell(centre=(40, 40), nucleus_centre=(56, 58), nucleus_radius=5)])
    crops = nucleus_crop(images, size=20)
    assert crops.shape == (2, 20, 20, 3)
    assert np.array_equal(crops[0], images[0, 16:36, 26:46])  # nucleus at (26, 36)
    assert tuple(crops[0][10, 10]) == NUCLEUS
    assert np.array_equal(crops[1], images[1, 44:64, 44:64])  # clamped at the border
    with pytest.raises(ConfigError, match="crop size"):
        nucleus_crop(images, size=65)


def test_perimeter_ring_is_the_outer_annulus_of_the_cell():
    images = cell(nucleus_radius=0)[None]
    ring = perimeter_mask(images, ring_fraction=0.25)[0]
    # the inscribed radius is ~24 px, so the ring is ~6 px wide: between r = 18 and r = 24
    assert np.array_equal(ring & ~disc(SIZE, (32, 32), 24), np.zeros_like(ring))
    assert not ring[disc(SIZE, (32, 32), 17)].any()
    assert ring[disc(SIZE, (32, 32), 24) & ~disc(SIZE, (32, 32), 19)].all()
    masked = perimeter_ring(images, ring_fraction=0.25)[0]
    assert (masked[~ring] == 0).all() and np.array_equal(masked[ring], images[0][ring])


def test_every_region_gives_uint8_batches():
    images = np.stack([cell(), cell(nucleus_centre=(30, 30))])
    for name in REGIONS:
        out = region_images(images, name)
        assert out.dtype == np.uint8 and out.shape[0] == 2 and out.shape[-1] == 3
    with pytest.raises(ConfigError, match="Did you mean 'nucleus'"):
        region_images(images, "nucleous")
    with pytest.raises(DataError, match=r"uint8 \(N, H, W, 3\)"):
        region_images(images.astype(np.float32), "nucleus")


def test_bagging_is_the_mean_of_the_members():
    members = {"nucleus": [0.9, 0.2], "perimeter": [0.5, 0.4], "top_left": [0.1, 0.3]}
    np.testing.assert_allclose(bag_probabilities(members), [0.5, 0.3])
    np.testing.assert_allclose(bag_probabilities(np.array([[0.2, 0.4]])), [0.3])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        bag_probabilities({"a": [1.5]})
    with pytest.raises(ConfigError, match="one probability per image"):
        bag_probabilities({"a": [0.5], "b": [0.5, 0.5]})


def test_stacker_learns_which_member_to_trust_from_validation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    informative = np.clip(0.5 + 0.4 * (2 * labels - 1) + rng.normal(0, 0.1, 200), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, 200)
    stacker = fit_stacker({"good": informative, "noise": noise}, labels, seed=0)
    coef = dict(zip(stacker.members, stacker.model.coef_[0], strict=True))
    assert coef["good"] > 5 * abs(coef["noise"])
    probs = stacker.predict({"good": [0.9, 0.1], "noise": [0.5, 0.5]})
    assert probs[0] > 0.9 and probs[1] < 0.1
    with pytest.raises(ConfigError, match="fitted on members"):
        stacker.predict({"good": [0.9]})
    with pytest.raises(ConfigError, match="both classes"):
        fit_stacker({"good": [0.2, 0.3]}, [1, 1])


def test_the_named_regions_are_the_ones_with_images():
    """The study file checks region names from `choices` (no numpy); each has its images."""
    assert tuple(REGIONS) == REGION_NAMES
