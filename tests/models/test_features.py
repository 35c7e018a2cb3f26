"""Per-cell features on synthetic cells of known geometry; the boosted classifier."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from leukaug.core.errors import ConfigError
from leukaug.models.cell_features import (
    FEATURE_NAMES,
    cell_features,
    fit_feature_classifier,
    predict_probabilities,
)

SIZE = 64
CYTOPLASM = (150, 170, 220)
NUCLEUS = (80, 40, 120)


def ellipse(a: float, b: float, centre=(32.0, 32.0)) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return ((cols - centre[1]) / a) ** 2 + ((rows - centre[0]) / b) ** 2 <= 1


def cell(a=20.0, b=20.0, nucleus_radius=8.0) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[ellipse(a, b)] = CYTOPLASM
    if nucleus_radius:
        image[ellipse(nucleus_radius, nucleus_radius)] = NUCLEUS
    return image


def test_morphology_matches_the_drawn_shapes():
    features = cell_features(np.stack([cell(), cell(a=24, b=12, nucleus_radius=6)]))
    assert list(features.columns) == list(FEATURE_NAMES)
    disc, oval = features.iloc[0], features.iloc[1]
    assert disc["area"] == pytest.approx(math.pi * 20**2, rel=0.02)
    assert disc["eccentricity"] < 0.1 and disc["solidity"] > 0.95
    assert disc["perimeter"] == pytest.approx(2 * math.pi * 20, rel=0.08)
    assert oval["area"] == pytest.approx(math.pi * 24 * 12, rel=0.03)
    assert oval["eccentricity"] == pytest.approx(math.sqrt(1 - (12 / 24) ** 2), abs=0.02)
    assert disc["nucleus_area"] == pytest.approx(math.pi * 8**2, rel=0.05)
    assert disc["nucleus_to_cell_ratio"] == pytest.approx(8**2 / 20**2, rel=0.06)
    assert oval["nucleus_to_cell_ratio"] == pytest.approx(6**2 / (24 * 12), rel=0.08)


def test_colour_and_texture():
    features = cell_features(np.stack([cell(nucleus_radius=0.0), cell()]))
    plain, nucleated = features.iloc[0], features.iloc[1]
    assert (plain["mean_r"], plain["mean_g"], plain["mean_b"]) == CYTOPLASM
    assert plain["std_g"] == 0 and nucleated["std_g"] > 0
    assert nucleated["nucleus_mean_g"] == pytest.approx(NUCLEUS[1])
    assert plain["glcm_contrast"] == 0 and plain["glcm_homogeneity"] == pytest.approx(1)
    assert nucleated["glcm_contrast"] > 0  # the nucleus edge inside the cell


def test_empty_image_gives_missing_features_not_a_crash(caplog):
    # issue 19: no cell found -> missing (NaN) features with a logged reason, never zeros
    features = cell_features(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    assert features.isna().to_numpy().all()
    assert "no cell found in 1 of 1" in caplog.text


def test_classifier_separates_cells_by_their_nucleus_ratio():
    rng = np.random.default_rng(0)
    labels = np.array([1, 0] * 50)  # HistGradientBoosting needs 20 cells per leaf
    radii = np.where(labels == 1, rng.uniform(11, 14, 100), rng.uniform(5, 8, 100))
    images = np.stack([cell(a=20 + rng.uniform(-2, 2), b=19, nucleus_radius=r) for r in radii])
    features = cell_features(images)
    classifier = fit_feature_classifier(features.iloc[:80], labels[:80], seed=0)
    probs = predict_probabilities(classifier, features.iloc[80:])
    assert ((probs > 0.5) == labels[80:]).all()
    with pytest.raises(ConfigError, match="both classes"):
        fit_feature_classifier(features.iloc[:5], [1] * 5)
    with pytest.raises(ConfigError, match="lacks columns"):
        predict_probabilities(classifier, pd.DataFrame({"area": [1.0]}))
