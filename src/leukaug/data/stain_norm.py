"""Stain normalisation of data that is not normalised (`[data] normalize`), with torchstain.

C-NMC is already stain-normalised; most lab data are not. `macenko` (Macenko et al., ISBI
2009: the haematoxylin and eosin stain vectors found in optical density, remixed with the
target's) and `reinhard` (Reinhard et al., 2001: per-channel mean and SD in LAB moved to the
target's) come from torchstain's NumPy backend. The target is fitted either to one reference
image (`normalize_reference`) or to the study's training cells (a fitted target: the pooled
pixels of up to `FIT_IMAGES` training images, never test images). A `StainTarget` holds the
fitted numbers, so the image cache, `dataset.json`, the model card and `predict` all apply
the very same transform.

Only stained pixels are fitted and changed: near-black pixels (C-NMC's black background,
pixels with every channel at most `BLACK_LEVEL`) are left as they are, since an optical
density of black is meaningless and would swamp the fit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukaug.core.errors import DataError
from leukaug.data.images import open_rgb

BLACK_LEVEL = 15  # a pixel with every channel <= this is background, not stain
FIT_IMAGES = 32  # training images pooled to fit a target when no reference image is given
MIN_PIXELS = 64  # fewer stained pixels than this: nothing to normalise
MACENKO_CLEAR = 240 * np.exp(-0.15) - 1  # brighter, in any channel: torchstain drops it as clear
METHOD_NAMES = {"macenko": "Macenko", "reinhard": "Reinhard"}


@dataclass(frozen=True)
class StainTarget:
    """A fitted target: `method`, its numbers (`values`), and where they came from."""

    method: str
    values: dict[str, list[Any]]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainTarget:
        return cls(str(data["method"]), dict(data["values"]), str(data["source"]))

    def key(self) -> str:
        """Identifies the transform (for the image cache's key)."""
        text = json.dumps({"method": self.method, "values": self.values}, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def describe(self) -> str:
        return f"{METHOD_NAMES[self.method]} (torchstain), target {self.source}"


def stained(image: np.ndarray) -> np.ndarray:
    """Boolean H x W mask of the pixels that are not near-black background."""
    return image.max(axis=2) > BLACK_LEVEL


def _normaliser(method: str) -> Any:
    import torchstain.numpy.normalizers as normalizers

    if method == "macenko":
        return normalizers.NumpyMacenkoNormalizer()
    if method == "reinhard":
        return normalizers.NumpyReinhardNormalizer()
    raise DataError(f"unknown stain normalisation {method!r}. Fix: use 'macenko' or 'reinhard'.")


def fit_target(
    method: str, images: Sequence[np.ndarray], source: str, where: str = "the target images"
) -> StainTarget:
    """Fit `method` to the stained pixels of `images` (uint8 H x W x 3, sizes may differ)."""
    pixels = np.concatenate([image[stained(image)] for image in images]) if images else None
    if pixels is None or len(pixels) < MIN_PIXELS:
        raise DataError(
            f"{where}: too few stained pixels to fit a {method} target. Fix: give "
            "normalize_reference an image of stained cells."
        )
    normaliser = _normaliser(method)
    try:
        normaliser.fit(pixels[None, :, :])
    except (np.linalg.LinAlgError, ValueError, IndexError) as error:
        raise DataError(
            f"{where}: cannot fit a {method} target ({error}). Fix: give normalize_reference "
            "a well-stained image, or use the other method."
        ) from None
    if method == "macenko":
        fitted = {"HERef": normaliser.HERef, "maxCRef": normaliser.maxCRef}
    else:
        fitted = {"means": normaliser.target_means, "stds": normaliser.target_stds}
    # rounded once, here: the numbers recorded are exactly the ones every image is moved with
    values = {name: np.round(np.asarray(v, dtype=float), 4).tolist() for name, v in fitted.items()}
    return StainTarget(method, values, source)


def reference_target(method: str, reference: str | Path) -> StainTarget:
    """The target fitted to one reference image."""
    path = Path(reference).expanduser().resolve()
    if not path.is_file():
        raise DataError(
            f"normalize_reference = {reference!r}: no such file ({path}). Fix: give the path of "
            "a reference image, or leave it out to fit the target to the training cells."
        )
    return fit_target(method, [open_rgb(path)[0]], f"fitted to {path.name}", where=str(path))


def training_target(method: str, paths: Sequence[str]) -> StainTarget:
    """The target fitted to up to `FIT_IMAGES` of `paths` (training images), spread evenly."""
    chosen = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(FIT_IMAGES, len(paths)))]
    images = [open_rgb(path)[0] for path in dict.fromkeys(chosen)]
    source = f"fitted to {len(images)} training images"
    return fit_target(method, images, source, where="the training images")


def normalize_image(image: np.ndarray, target: StainTarget, where: str = "image") -> np.ndarray:
    """`image` (uint8 H x W x 3) with its stained pixels moved to `target`; background kept."""
    mask = stained(image)
    if mask.sum() < MIN_PIXELS or (
        target.method == "macenko" and (image[mask] < MACENKO_CLEAR).all(axis=1).sum() < MIN_PIXELS
    ):
        return image  # no stain to move (Macenko needs pixels darker than its light level)
    normaliser = _normaliser(target.method)
    if target.method == "macenko":
        normaliser.HERef = np.asarray(target.values["HERef"], dtype=float)
        normaliser.maxCRef = np.asarray(target.values["maxCRef"], dtype=float)
    else:
        normaliser.target_means = np.asarray(target.values["means"], dtype=np.float32)
        normaliser.target_stds = np.asarray(target.values["stds"], dtype=np.float32)
    pixels = image[mask][None, :, :]
    try:
        if target.method == "macenko":
            moved = normaliser.normalize(pixels, stains=False)[0]
        else:
            moved = normaliser.normalize(pixels)
    except (np.linalg.LinAlgError, ValueError, IndexError) as error:
        raise DataError(
            f"{where}: {target.method} stain normalisation failed ({error}). Fix: remove or "
            "replace this image, or use the other method."
        ) from None
    out = image.copy()
    out[mask] = moved[0]
    return out
