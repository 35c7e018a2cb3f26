"""Features beyond the image: per-cell morphology, colour and texture, and a boosted classifier.

The seed paper doubts that "CNNs might be the best approach"; this is the non-CNN answer a
haematologist would reach for: measure each cell, then classify the measurements.

- morphology (scikit-image `regionprops` of the cell found by `leukaug.data.cell_mask`, on
  black or on a smear, and of the nucleus = the more purple Otsu class, see `regions`): area,
  perimeter, eccentricity, solidity, and the nucleus' area, eccentricity, solidity and its
  share of the cell (the nucleus-to-cell ratio, ALL's hallmark);
- colour: mean and standard deviation of R, G, B over the cell and mean R, G, B over the
  nucleus (0-255 scale);
- texture: grey-level co-occurrence (GLCM) contrast, dissimilarity, homogeneity, energy and
  correlation of the cell's luminance, 32 grey levels, distance 1, averaged over 0/45/90/135
  degrees, background pairs excluded (level 0 is reserved for the background).

A cell the mask cannot find (`cell_mask.find_cells` says why) gets NaN features, which the
gradient-boosted classifier treats as missing; `cell_features` logs how many there were.

`fit_feature_classifier` fits scikit-learn's HistGradientBoostingClassifier with balanced
class weights; `predict_probabilities` gives P(ALL) (ALL = 1), the column `predictions.csv` holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import label, regionprops
from sklearn.ensemble import HistGradientBoostingClassifier

from leukaug.core.errors import ConfigError
from leukaug.data.cell_mask import find_cells
from leukaug.data.regions import check_images, luminance, nucleus_mask

log = logging.getLogger(__name__)

GLCM_LEVELS = 32
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
SHAPE_FEATURES = ("area", "perimeter", "eccentricity", "solidity")
FEATURE_NAMES: tuple[str, ...] = (
    *SHAPE_FEATURES,
    *(f"nucleus_{name}" for name in ("area", "eccentricity", "solidity")),
    "nucleus_to_cell_ratio",
    *(f"{stat}_{channel}" for stat in ("mean", "std") for channel in "rgb"),
    *(f"nucleus_mean_{channel}" for channel in "rgb"),
    *(f"glcm_{name}" for name in GLCM_PROPERTIES),
)


def _largest_region(mask: np.ndarray) -> Any:  # skimage RegionProperties, or None
    regions = regionprops(label(mask))
    return max(regions, key=lambda region: region.area) if regions else None


def _shape(mask: np.ndarray) -> dict[str, float]:
    region = _largest_region(mask)
    if region is None:
        return dict.fromkeys(SHAPE_FEATURES, 0.0)
    return {
        "area": float(region.area),
        "perimeter": float(region.perimeter),
        "eccentricity": float(region.eccentricity),
        "solidity": float(region.solidity),
    }


def _glcm(luma: np.ndarray, cell: np.ndarray) -> dict[str, float]:
    """GLCM properties of the cell, background (level 0) pairs left out."""
    levels = 1 + np.minimum((luma / 256.0 * (GLCM_LEVELS - 1)).astype(np.uint8), GLCM_LEVELS - 2)
    levels = np.where(cell, levels, 0).astype(np.uint8)
    matrix = graycomatrix(levels, [1], list(GLCM_ANGLES), levels=GLCM_LEVELS, symmetric=True)
    matrix = matrix[1:, 1:].astype(np.float64)  # drop every pair that touches the background
    if matrix.sum() == 0:
        return {f"glcm_{name}": 0.0 for name in GLCM_PROPERTIES}
    return {f"glcm_{name}": float(graycoprops(matrix, name).mean()) for name in GLCM_PROPERTIES}


def cell_features(images: np.ndarray) -> pd.DataFrame:
    """One row of `FEATURE_NAMES` per uint8 (N, H, W, 3) cell (on black or on a smear);
    NaN where no cell was found."""
    images = check_images(images)
    found = find_cells(images)
    if note := found.not_found_summary():
        log.warning("cell features: %s; their features are missing (NaN)", note)
    cells = found.masks
    nuclei = nucleus_mask(images, cells)
    luma = luminance(images)
    rows = []
    for image, cell, nucleus, grey in zip(images, cells, nuclei, luma, strict=True):
        shape = _shape(cell)
        nucleus_shape = _shape(nucleus)
        pixels = image[cell].astype(np.float64) if cell.any() else np.zeros((1, 3))
        nucleus_pixels = image[nucleus].astype(np.float64) if nucleus.any() else np.zeros((1, 3))
        row = dict(shape)
        row |= {f"nucleus_{k}": nucleus_shape[k] for k in ("area", "eccentricity", "solidity")}
        row["nucleus_to_cell_ratio"] = (
            nucleus_shape["area"] / shape["area"] if shape["area"] else 0.0
        )
        row |= {f"mean_{c}": v for c, v in zip("rgb", pixels.mean(axis=0), strict=True)}
        row |= {f"std_{c}": v for c, v in zip("rgb", pixels.std(axis=0), strict=True)}
        row |= {
            f"nucleus_mean_{c}": v for c, v in zip("rgb", nucleus_pixels.mean(axis=0), strict=True)
        }
        row |= _glcm(grey, cell)
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(FEATURE_NAMES), dtype=np.float64)
    table.loc[~found.found, :] = np.nan
    return table


def _matrix(features: pd.DataFrame) -> np.ndarray:
    missing = [name for name in FEATURE_NAMES if name not in features.columns]
    if missing:
        raise ConfigError(
            f"feature table lacks columns {missing[:5]}; build it with leukaug.models.cell_features.cell_features."
        )
    return features[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


def fit_feature_classifier(
    train_features: pd.DataFrame, labels: Sequence[int], seed: int = 0
) -> HistGradientBoostingClassifier:
    """A gradient-boosted classifier (class-balanced) on the training cells' features."""
    matrix = _matrix(train_features)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(matrix),):
        raise ConfigError(
            f"labels must have one entry per feature row ({len(matrix)}), got {labels.shape}."
        )
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ConfigError("the feature classifier needs both classes (ALL = 1, HEM = 0) to train.")
    classifier = HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)
    return classifier.fit(matrix, labels)


def predict_probabilities(
    classifier: HistGradientBoostingClassifier, features: pd.DataFrame
) -> np.ndarray:
    """P(ALL) per row of `features`."""
    column = list(classifier.classes_).index(1)
    return classifier.predict_proba(_matrix(features))[:, column]
