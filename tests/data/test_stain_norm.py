"""Stain normalisation (`[data] normalize`): torchstain's Macenko and Reinhard moving a cell's
stain to a target, applied once in the image cache, background left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukaug.core.errors import ConfigError, DataError
from leukaug.data.cache import load_or_build_cache
from leukaug.data.stain_norm import (
    StainTarget,
    fit_target,
    normalize_image,
    reference_target,
    stained,
)
from leukaug.study.study_file import parse_study

HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])
TINTED_H = np.array([0.45, 0.80, 0.40])  # another lab's haematoxylin: a bluer, paler stain
TINTED_E = np.array([0.20, 0.90, 0.30])


def stained_cell(h: np.ndarray, e: np.ndarray, seed: int, size: int = 48) -> np.ndarray:
    """A cell of two stains (Beer-Lambert: I = 240 exp(-OD)) on a black background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.5) ** 2
    c_h = rng.uniform(0.2, 1.2, (size, size))
    c_e = rng.uniform(0.1, 0.6, (size, size))
    od = c_h[..., None] * h / np.linalg.norm(h) + c_e[..., None] * e / np.linalg.norm(e)
    image = np.clip(240 * np.exp(-od), 0, 255).astype(np.uint8)
    image[~inside] = 0
    return image


def colour_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a[stained(a)].mean(0) - b[stained(b)].mean(0)).sum())


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalisation_moves_a_cell_to_the_target_stain(method: str) -> None:
    reference = stained_cell(HAEMATOXYLIN, EOSIN, seed=0)
    tinted = stained_cell(TINTED_H, TINTED_E, seed=1)
    target = fit_target(method, [reference], "fitted to the reference")
    moved = normalize_image(tinted, target)
    assert colour_gap(moved, reference) < 0.5 * colour_gap(tinted, reference)
    background = ~stained(tinted)
    assert (moved[background] == tinted[background]).all()  # black stays black
    again = StainTarget.from_dict(target.to_dict())  # as dataset.json and the card keep it
    assert (normalize_image(tinted, again) == moved).all() and again.key() == target.key()


def test_a_reference_image_and_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "reference.png"
    Image.fromarray(stained_cell(HAEMATOXYLIN, EOSIN, seed=2)).save(path)
    target = reference_target("reinhard", path)
    assert target.source == "fitted to reference.png" and len(target.values["means"]) == 3
    with pytest.raises(DataError, match="no such file"):
        reference_target("macenko", tmp_path / "missing.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(DataError, match="too few stained pixels"):
        reference_target("macenko", tmp_path / "black.png")


def test_the_cache_applies_it_once_and_keys_on_it(tmp_path: Path) -> None:
    rows = []
    for i in range(3):
        path = tmp_path / f"cell{i}.png"
        Image.fromarray(stained_cell(TINTED_H, TINTED_E, seed=i)).save(path)
        rows.append({"image_id": path.name, "path": str(path)})
    manifest = pd.DataFrame(rows)
    target = fit_target("macenko", [stained_cell(HAEMATOXYLIN, EOSIN, seed=9)], "test")
    plain = load_or_build_cache(manifest, 32, tmp_path / "cache")
    normalised = load_or_build_cache(manifest, 32, tmp_path / "cache", stain=target)
    assert plain.fingerprint != normalised.fingerprint and normalised.stain == target
    assert not np.array_equal(plain.images, normalised.images)
    reopened = load_or_build_cache(manifest, 32, tmp_path / "cache", stain=target)
    assert reopened.path == normalised.path
    assert np.array_equal(reopened.images, normalised.images)


def test_the_study_file_checks_the_settings() -> None:
    base = {"models": {"custom_cnn": {}}, "training": {"image_size": 72}}
    assert parse_study(base | {"data": {"normalize": "reinhard"}}).data.normalize == "reinhard"
    with pytest.raises(ConfigError, match="normalize_reference is set but normalize = 'none'"):
        parse_study(base | {"data": {"normalize_reference": "ref.png"}})
    with pytest.raises(ConfigError, match=r"data\.normalize"):
        parse_study(base | {"data": {"normalize": "vahadane"}})
