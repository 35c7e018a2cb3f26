"""Where the white cell is, on any background: one mask for the CAM share, the region crops,
the features arm and the background check.

Two backgrounds, told apart by the image's border (`BORDER_PX` pixels wide):

- black (C-NMC's segmented cells, leukaug's synthetic cells): at least half of the border is
  black, and the cell is the non-black pixels (any channel above `BLACK_THRESHOLD`);
- anything else (a raw blood smear: pale background, red cells): the cell is the stained
  region of the haematoxylin channel (scikit-image `rgb2hed`, Ruifrok & Johnston 2001),
  above Otsu's threshold of that channel; nuclei and basophilic cytoplasm absorb red and
  green (haematoxylin-like), red cells and the smear's background mostly green (eosin-like).

Either way the mask is the connected region at the centre of the image (the component
holding the centre pixel, else the one nearest to it among those of at least
`MIN_COMPONENT_SHARE` of the image), holes filled. On a smear two thresholds are tried,
loosest first (the whole cell, then its nucleus). When no plausible cell is found (nothing
stained, a region covering more than `MAX_CELL_SHARE` of the image, or on a smear a region
reaching all four edges: a background stained like the cell) the mask is empty and
`reasons` says why; it never defaults to "everything is cell".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from leukaug.core.errors import DataError

BLACK_THRESHOLD = 10  # max channel value above which a pixel is not black background
BORDER_PX = 2  # the frame whose pixels decide the background kind
BLACK_BORDER_SHARE = 0.5  # at least this share of black border pixels: a black background
MAX_CELL_SHARE = 0.9  # a "cell" larger than this share of the image is no distinct cell
MIN_COMPONENT_SHARE = 0.005  # specks smaller than this share of the image are not the cell
DENSITY_FLOOR = 1e-3  # haematoxylin densities below this (unstained) count as this
SMOOTHING_SIGMA = 1.0  # px: Gaussian smoothing of the haematoxylin channel before Otsu
BLACK, STAINED = "black", "stained"  # the background kinds


@dataclass(frozen=True)
class CellMasks:
    """The cells of a batch: `masks` bool (N, H, W), empty where none was found; `found`
    bool (N,); `reasons` one text per image ("" where found); `backgrounds` black | stained."""

    masks: np.ndarray
    found: np.ndarray
    reasons: tuple[str, ...]
    backgrounds: tuple[str, ...]

    def not_found_summary(self) -> str:
        """'' when every cell was found, else how many were not and the first reason."""
        missing = np.flatnonzero(~self.found)
        if not missing.size:
            return ""
        return (
            f"no cell found in {missing.size} of {len(self.found)} image(s) "
            f"(first: image {missing[0]}, {self.reasons[missing[0]]})"
        )


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(
            f"cell masks need uint8 (N, H, W, 3) RGB cells, got {images.dtype} "
            f"{images.shape}; pass an image cache's rows (ImageCache.images[rows])."
        )
    return images


def border_pixels(image: np.ndarray, width: int = BORDER_PX) -> np.ndarray:
    """(K, 3) the pixels of the image's outer frame, `width` pixels wide."""
    frame = np.ones(image.shape[:2], bool)
    frame[width:-width, width:-width] = False
    return image[frame]


def background_kind(image: np.ndarray) -> str:
    """`BLACK` when at least `BLACK_BORDER_SHARE` of the border is black, else `STAINED`."""
    black = border_pixels(image).max(axis=-1) <= BLACK_THRESHOLD
    return BLACK if black.mean() >= BLACK_BORDER_SHARE else STAINED


def haematoxylin(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(raw, smoothed) haematoxylin optical density of a uint8 RGB image, each (H, W)."""
    raw = rgb2hed(image)[..., 0]
    return raw, ndimage.gaussian_filter(raw, SMOOTHING_SIGMA)


def stain_thresholds(density: np.ndarray) -> list[float]:
    """Thresholds of the haematoxylin density, loosest first: Otsu's on its logarithm (the
    faint cytoplasm is stained many times the background, though far less than the nucleus),
    then Otsu's on the density itself (the nucleus)."""
    if density.min() == density.max():
        return []
    log_density = np.log10(np.maximum(density, DENSITY_FLOOR))
    loose = [10 ** float(threshold_otsu(log_density))] if np.ptp(log_density) > 0 else []
    return [*loose, float(threshold_otsu(density))]


def central_component(candidates: np.ndarray) -> np.ndarray:
    """The connected component at the centre (or nearest to it among the non-specks), holes
    filled; all False when there is none."""
    labels, count = ndimage.label(candidates)
    if count == 0:
        return np.zeros_like(candidates)
    height, width = candidates.shape
    centre = labels[height // 2, width // 2]
    if centre == 0:
        sizes = np.bincount(labels.ravel())
        big = [k for k in range(1, count + 1) if sizes[k] >= MIN_COMPONENT_SHARE * labels.size]
        if not big:
            return np.zeros_like(candidates)
        rows, cols = np.indices(labels.shape)
        distance = np.hypot(rows - (height - 1) / 2, cols - (width - 1) / 2)
        nearest = ndimage.minimum(distance, labels, big)
        centre = big[int(np.argmin(nearest))]
    return ndimage.binary_fill_holes(labels == centre)


def touches_every_edge(mask: np.ndarray) -> bool:
    """True when the mask reaches the top, bottom, left and right edge of the frame."""
    return bool(mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any())


def find_cell(image: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(mask, reason, background kind) of one uint8 (H, W, 3) image; reason "" when found.

    On a stained background the loosest threshold whose central region is a plausible cell
    wins: the whole cell (cytoplasm and nucleus) when it stands out, else its nucleus."""
    kind = background_kind(image)
    if kind == BLACK:
        candidates = [image.max(axis=-1) > BLACK_THRESHOLD]
    else:
        raw, density = haematoxylin(image)  # the smoothed density finds the region, raw its edge
        candidates = [
            (density > threshold) & (raw > threshold) for threshold in stain_thresholds(density)
        ]
    what = "non-black" if kind == BLACK else "haematoxylin-stained"
    reasons = [] if candidates else [f"no {what} region on a {kind} background"]
    for candidate in candidates:
        mask = central_component(candidate)
        share = float(mask.mean())
        if not mask.any():
            reasons.append(f"no {what} region on a {kind} background")
        elif share > MAX_CELL_SHARE:
            reasons.append(
                f"the {what} region covers {share:.0%} of the image (more than "
                f"{MAX_CELL_SHARE:.0%}): no distinct cell on a {kind} background"
            )
        elif kind == STAINED and touches_every_edge(mask):
            reasons.append(
                f"the {what} region reaches all four edges of the image: the background "
                "is stained like the cell, no distinct cell"
            )
        else:
            return mask, "", kind
    return np.zeros(image.shape[:2], bool), reasons[0], kind


def find_cells(images: np.ndarray) -> CellMasks:
    """The white cell of every uint8 (N, H, W, 3) image (see the module doc)."""
    images = _check(images)
    masks = np.zeros(images.shape[:3], bool)
    reasons, kinds = [], []
    for index, image in enumerate(images):
        masks[index], reason, kind = find_cell(image)
        reasons.append(reason)
        kinds.append(kind)
    found = np.array([not reason for reason in reasons], bool)
    return CellMasks(masks, found, tuple(reasons), tuple(kinds))


def replace_background(
    images: np.ndarray, masks: np.ndarray, fill: str | tuple[int, int, int]
) -> np.ndarray:
    """`images` with every pixel outside its mask replaced: `fill` = "median" (the median
    colour of that image's own background pixels), "black", or an RGB triple."""
    images = _check(images)
    if masks.shape != images.shape[:3]:
        raise DataError(f"masks {masks.shape} do not match images {images.shape[:3]}.")
    out = images.copy()
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        if fill == "median":
            outside = image[~mask]
            colour = np.median(outside, axis=0) if len(outside) else np.zeros(3)
        elif fill == "black":
            colour = np.zeros(3)
        else:
            colour = np.asarray(fill, dtype=np.float64)
        out[index][~mask] = np.clip(np.round(colour), 0, 255).astype(np.uint8)
    return out
