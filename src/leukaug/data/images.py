"""Open one image file as RGB uint8, converting other modes explicitly (never silently).

C-NMC images are 24-bit RGB BMPs. Other data sets may hold grayscale (L, LA), RGBA,
palette (P) or 16-bit (I;16) files; each is converted by a stated rule and the caller
counts the conversions so the report can say what happened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from leukaug.errors import DataError

IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"})

# How each mode becomes RGB. Alpha is composited onto black: C-NMC cells sit on black.
CONVERSION_RULES = {
    "RGB": "none",
    "L": "grey replicated to R, G, B",
    "1": "bilevel to grey, replicated to R, G, B",
    "LA": "alpha composited onto black, grey replicated",
    "RGBA": "alpha composited onto black",
    "RGBa": "alpha composited onto black",
    "P": "palette expanded (transparency composited onto black)",
    "PA": "palette expanded, alpha composited onto black",
    "CMYK": "CMYK to RGB by PIL",
    "YCbCr": "YCbCr to RGB by PIL",
    "I;16": "16-bit scaled to 8-bit (value >> 8), replicated",
    "I;16B": "16-bit scaled to 8-bit (value >> 8), replicated",
    "I;16L": "16-bit scaled to 8-bit (value >> 8), replicated",
    "I": "32-bit integer scaled to 8-bit by the image's maximum, replicated",
}


def is_image_file(path: Path) -> bool:
    """An image by suffix; macOS resource forks (`._name.bmp`) are not images."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("._")


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("L", "1"):
        grey = np.asarray(image.convert("L"), dtype=np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.int64)
        if mode == "I":
            top = max(int(values.max()), 1)
            grey = (np.clip(values, 0, None) * 255 // top).astype(np.uint8)
        else:
            grey = (values >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
        if mode == "RGB":
            return np.asarray(image, dtype=np.uint8)
    if mode in ("LA", "PA", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        rgba = np.asarray(image, dtype=np.uint16)
        rgb = rgba[..., :3] * rgba[..., 3:4] // 255  # composite onto black
        return rgb.astype(np.uint8)
    if mode in ("CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise ValueError(f"unsupported image mode {mode!r}")


def open_rgb(path: str | Path) -> tuple[np.ndarray, str]:
    """Fully decode `path`; return (uint8 H x W x 3 RGB, the file's original mode).

    Raises `DataError` naming the file when it is unreadable, truncated or of an
    unsupported mode.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # full decode: a truncated file fails here, not later in training
            mode = image.mode
            if mode not in CONVERSION_RULES:
                raise DataError(
                    f"{path}: unsupported image mode {mode!r}. "
                    f"Fix: convert it to RGB (supported modes: {', '.join(sorted(CONVERSION_RULES))})."
                )
            return _to_rgb(image), mode
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(
            f"{path}: cannot read this image ({error}). It is unreadable or truncated. "
            "Fix: re-download or re-extract the file, or remove it from the data set."
        ) from None
