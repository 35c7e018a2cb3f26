"""Region-specialised inputs for a bagged arm, and how the members' votes are combined.

The seed paper's future work: networks that each see one part of the cell (the four
quadrants, the nucleus, the perimeter), trained independently and bagged. Everything
here is a pure function of uint8 (N, H, W, 3) batches of single cells, on black (C-NMC's
segmented layout) or on a smear, so a study can build each member's image cache from the
arm's cache:

- `foreground_mask`: the cell, found by `leukaug.data.cell_mask` (the non-black pixels on
  black, the central haematoxylin-stained region on a smear; empty where none is found);
- `nucleus_mask`: the more purple of the cell's two Otsu classes of green chromaticity
  G / (R + G + B): the nuclear stain absorbs green, and chromaticity, unlike brightness,
  does not mistake the cell's dark blurred rim for nucleus;
- `REGIONS`: name -> function giving that region's images (`region_images(images, name)`);
  quadrants are (H//2, W//2) crops, the nucleus crop is (H//2, W//2) centred on the nucleus
  (clamped inside the image), the perimeter keeps the full frame and blacks out all but
  the outer ring of the cell (an annulus that follows its contour), black elsewhere.

`bag_probabilities` averages the members' P(ALL); `fit_stacker` fits a logistic regression
on the members' validation predictions only (never on test), as a learned alternative.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from sklearn.linear_model import LogisticRegression

from leukaug.core.errors import ConfigError, DataError, unknown_name_message
from leukaug.data.cell_mask import find_cells
from leukaug.data.choices import NUCLEUS, PERIMETER, QUADRANTS

RIM_PX = 2  # the cell's blurred edge, left out of the nucleus
RING_FRACTION = 0.3  # the perimeter ring's width, as a fraction of the cell's inscribed radius


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """`images` as a uint8 (N, H, W, 3) array, else `DataError` saying what came."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(
            f"{what} must be uint8 (N, H, W, 3) RGB cells, got {images.dtype} "
            f"{images.shape}; pass an image cache's rows (ImageCache.images[rows])."
        )
    return images


def foreground_mask(images: np.ndarray) -> np.ndarray:
    """Boolean (N, H, W): the cell's pixels (`cell_mask.find_cells`; empty where none is found)."""
    return find_cells(check_images(images)).masks


def luminance(images: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, float (N, H, W) on the 0-255 scale."""
    return check_images(images).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def green_chromaticity(images: np.ndarray) -> np.ndarray:
    """G / (R + G + B), float (N, H, W): low where the nuclear stain absorbs green (purple),
    and unchanged where a colour only fades to black (the cell's blurred rim)."""
    rgb = check_images(images).astype(np.float32)
    return rgb[..., 1] / np.maximum(rgb.sum(axis=-1), 1.0)


def nucleus_mask(images: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
    """Boolean (N, H, W): the cell's pixels of the more purple Otsu class of green chromaticity,
    `RIM_PX` pixels away from the cell's edge (too dark there for a reliable colour)."""
    foreground = foreground_mask(images) if foreground is None else foreground
    chroma = green_chromaticity(images)
    masks = np.zeros_like(foreground)
    for index in range(len(images)):
        core = ndimage.binary_erosion(foreground[index], iterations=RIM_PX)
        values = chroma[index][core]
        if values.size < 2 or values.min() == values.max():
            masks[index] = core
            continue
        masks[index] = core & (chroma[index] <= threshold_otsu(values))
    return masks


def _centres(masks: np.ndarray) -> np.ndarray:
    """(N, 2) row/column centroids of boolean masks; the frame's centre for an empty mask."""
    n, height, width = masks.shape
    centres = np.tile([(height - 1) / 2, (width - 1) / 2], (n, 1)).astype(np.float64)
    for index in range(n):
        rows, cols = np.nonzero(masks[index])
        if rows.size:
            centres[index] = rows.mean(), cols.mean()
    return centres


def nucleus_centres(images: np.ndarray) -> np.ndarray:
    """(N, 2) row/column centroid of each cell's nucleus."""
    return _centres(nucleus_mask(images))


def quadrant(images: np.ndarray, name: str) -> np.ndarray:
    """One quadrant, (N, H//2, W//2, 3)."""
    images = check_images(images)
    if name not in QUADRANTS:
        raise ConfigError(unknown_name_message("quadrant", name, QUADRANTS))
    half_h, half_w = images.shape[1] // 2, images.shape[2] // 2
    row = 0 if name.startswith("top") else images.shape[1] - half_h
    col = 0 if name.endswith("left") else images.shape[2] - half_w
    return images[:, row : row + half_h, col : col + half_w]


def nucleus_crop(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """(N, size, size, 3) windows centred on each nucleus, shifted to stay inside the image."""
    images = check_images(images)
    height, width = images.shape[1:3]
    size = min(height, width) // 2 if size is None else int(size)
    if not 1 <= size <= min(height, width):
        raise ConfigError(f"nucleus crop size must be in 1..{min(height, width)}, got {size}.")
    out = np.empty((len(images), size, size, 3), np.uint8)
    for index, (row, col) in enumerate(nucleus_centres(images)):
        top = int(np.clip(round(row - size / 2), 0, height - size))
        left = int(np.clip(round(col - size / 2), 0, width - size))
        out[index] = images[index, top : top + size, left : left + size]
    return out


def perimeter_mask(images: np.ndarray, ring_fraction: float = RING_FRACTION) -> np.ndarray:
    """Boolean (N, H, W): foreground pixels within `ring_fraction` of the cell's inscribed
    radius from its edge (distance transform of the foreground: the ring follows the contour)."""
    if not 0 < ring_fraction <= 1:
        raise ConfigError(f"ring_fraction must be in (0, 1], got {ring_fraction}.")
    foreground = foreground_mask(images)
    rings = np.zeros_like(foreground)
    for index in range(len(foreground)):
        distance = ndimage.distance_transform_edt(foreground[index])
        width = ring_fraction * distance.max()
        rings[index] = foreground[index] & (distance <= max(width, 1.0))
    return rings


def perimeter_ring(images: np.ndarray, ring_fraction: float = RING_FRACTION) -> np.ndarray:
    """(N, H, W, 3) images black outside the cell's perimeter ring."""
    images = check_images(images)
    return np.where(perimeter_mask(images, ring_fraction)[..., None], images, np.uint8(0))


def _quadrant_region(name: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: quadrant(images, name)


# name (`choices.REGION_NAMES`) -> function of a uint8 batch: what one bagged member sees.
REGIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{name: _quadrant_region(name) for name in QUADRANTS},
    NUCLEUS: nucleus_crop,
    PERIMETER: perimeter_ring,
}


def region_images(images: np.ndarray, region: str) -> np.ndarray:
    """The images one region-specialised member sees (see `REGIONS`)."""
    if region not in REGIONS:
        raise ConfigError(unknown_name_message("region", region, REGIONS))
    return REGIONS[region](check_images(images))


def _member_matrix(member_probs: Mapping[str, Sequence[float]] | np.ndarray) -> np.ndarray:
    """(N, M): one column of P(ALL) per member, members in sorted-name order for a mapping."""
    if isinstance(member_probs, Mapping):
        if not member_probs:
            raise ConfigError("bagging needs at least one member's probabilities, got none.")
        columns = [
            np.asarray(member_probs[name], dtype=np.float64) for name in sorted(member_probs)
        ]
        if len({c.shape for c in columns}) != 1 or columns[0].ndim != 1:
            shapes = {name: np.shape(member_probs[name]) for name in sorted(member_probs)}
            raise ConfigError(f"members must give one probability per image each; got {shapes}.")
        matrix = np.stack(columns, axis=1)
    else:
        matrix = np.asarray(member_probs, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise ConfigError(f"member probabilities must be (N, members), got {matrix.shape}.")
    if not np.all((matrix >= 0) & (matrix <= 1)):
        raise ConfigError("member probabilities must lie in [0, 1] (P(ALL) per image).")
    return matrix


def bag_probabilities(member_probs: Mapping[str, Sequence[float]] | np.ndarray) -> np.ndarray:
    """The bagged P(ALL): the mean over members ((N, M) array or member name -> (N,) probs)."""
    return _member_matrix(member_probs).mean(axis=1)


@dataclass(frozen=True)
class Stacker:
    """A logistic regression over the members' logits, fitted on validation predictions."""

    members: tuple[str, ...] | None  # the mapping's member names (sorted), None for arrays
    model: LogisticRegression

    def predict(self, member_probs: Mapping[str, Sequence[float]] | np.ndarray) -> np.ndarray:
        """P(ALL) for new member predictions (same members as at fitting)."""
        if isinstance(member_probs, Mapping) and tuple(sorted(member_probs)) != self.members:
            raise ConfigError(
                f"the stacker was fitted on members {self.members}, got {tuple(sorted(member_probs))}."
            )
        return self.model.predict_proba(_logits(_member_matrix(member_probs)))[:, 1]


def _logits(probs: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    clipped = np.clip(probs, eps, 1 - eps)
    return np.log(clipped / (1 - clipped))


def fit_stacker(
    val_member_probs: Mapping[str, Sequence[float]] | np.ndarray,
    val_labels: Sequence[int],
    seed: int = 0,
) -> Stacker:
    """Fit the stacker on the VALIDATION split's member predictions and labels (ALL = 1)."""
    matrix = _member_matrix(val_member_probs)
    labels = np.asarray(val_labels, dtype=np.int64)
    if labels.shape != (len(matrix),):
        raise ConfigError(
            f"val_labels must have one label per image ({len(matrix)}), got {labels.shape}."
        )
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ConfigError(
            "the stacker needs both classes (ALL = 1, HEM = 0) in the validation labels; "
            "use bag_probabilities (the mean) instead."
        )
    members = tuple(sorted(val_member_probs)) if isinstance(val_member_probs, Mapping) else None
    model = LogisticRegression(random_state=seed).fit(_logits(matrix), labels)
    return Stacker(members, model)


LOW_FOREGROUND_SHARE = 0.5  # below this, a model looks more at the background than at the cell


def foreground_share(cams: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Per image, the share of the map's mass on the foreground (NaN for an all-zero map, and
    for an empty foreground: no cell found, so no share, never "all on the cell")."""
    if cams.shape != foreground.shape:
        raise DataError(
            f"CAMs {cams.shape} and foreground masks {foreground.shape} differ in shape."
        )
    total = cams.reshape(len(cams), -1).sum(axis=1)
    inside = (cams * foreground).reshape(len(cams), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
    return np.where(foreground.reshape(len(cams), -1).any(axis=1), share, np.nan)
