"""Open one image file as RGB uint8, converting other modes explicitly (never silently).

Which files are images: a file with an image suffix (`IMAGE_SUFFIXES`), or one whose first
bytes are a BMP, PNG, JPEG or TIFF signature whatever its name (`sniff_format`); PIL then
decodes each by its content, so BMP data under a `.png` name (a real C-NMC download quirk)
is read as the BMP it is, and `read_dataset` notes the mismatch.

C-NMC images are 24-bit RGB BMPs. Other data sets may hold grayscale (L, LA), RGBA,
palette (P) or 16-bit (I;16) files; each is converted by a stated rule and the caller
counts the conversions so the report can say what happened.

Size limit: a file whose header declares more than `MAX_PIXELS` pixels (or the caller's
`max_pixels`) is refused by name before it is decoded (`check_pixels` reads the header
only), so a tiny file declaring a huge image (a decompression bomb) costs nothing. This
limit replaces PIL's own `Image.MAX_IMAGE_PIXELS` guard, which is lifted while leukaug
opens a file so that PIL's warnings and errors never reach the user instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from leukaug.core.errors import DataError

# 50 megapixels: over 200 times a C-NMC image (450 x 450), about 150 MB once decoded as RGB.
MAX_PIXELS = 50_000_000
_PIL_GUARD = threading.Lock()  # serialises the brief lifting of PIL's global limit

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


# The formats leukaug reads, by their first bytes (the file signatures of each format).
SIGNATURES = (
    (b"BM", "BMP"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)
FORMAT_OF_SUFFIX = {
    ".bmp": "BMP",
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def sniff_format(path: Path) -> str | None:
    """ "BMP", "PNG", "JPEG" or "TIFF" from the file's first bytes; None for anything else."""
    if not path.is_file():  # never open a FIFO or a device: the read would block or not end
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    return next((name for magic, name in SIGNATURES if head.startswith(magic)), None)


def is_image_file(path: Path) -> bool:
    """An image by suffix, or by content when the suffix is not an image's; macOS resource
    forks (`._name.bmp`) are not images."""
    if path.name.startswith("._"):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES or sniff_format(path) is not None


def misnamed(path: Path) -> str | None:
    """The real format of an image whose suffix names another one (e.g. BMP data in `x.png`)."""
    found = sniff_format(path)
    named = FORMAT_OF_SUFFIX.get(path.suffix.lower())
    return found if found is not None and found != named else None


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


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> DataError:
    return DataError(
        f"{path}: the image is {width} x {height} = {width * height:,} pixels, over the limit "
        f"of {max_pixels:,}. It may be a decompression bomb (a small file declaring a huge "
        "image). Fix: remove or shrink the file, or raise the limit (max_pixels) if it is genuine."
    )


@contextmanager
def _opened(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """`Image.open` (header only) with leukaug's pixel limit in place of PIL's."""
    with _PIL_GUARD:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # checked below against max_pixels, before any decoding
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(path, width, height, max_pixels)
        yield image


def check_pixels(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header of `path`, without decoding the pixels.

    Raises `DataError` naming the file when it declares more than `max_pixels` pixels
    or cannot be opened.
    """
    path = Path(path)
    try:
        with _opened(path, max_pixels) as image:
            return image.size
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise _unreadable(path, error) from None


def _too_large_frame(path: Path, error: Exception) -> DataError:
    return DataError(
        f"{path}: a frame of this image is too large to decode ({error}). "
        "Fix: remove or shrink the file."
    )


def _unreadable(path: Path, error: Exception) -> DataError:
    return DataError(
        f"{path}: cannot read this image ({error}). It is unreadable or truncated. "
        "Fix: re-download or re-extract the file, or remove it from the data set."
    )


def open_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Fully decode `path`; return (uint8 H x W x 3 RGB, the file's original mode).

    Raises `DataError` naming the file when it declares more than `max_pixels` pixels
    (checked before decoding), is unreadable or truncated, or has an unsupported mode.
    """
    path = Path(path)
    try:
        with _opened(path, max_pixels) as image:
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
    except Image.DecompressionBombError as error:  # a frame past PIL's limit, seen while decoding
        raise _too_large_frame(path, error) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise _unreadable(path, error) from None
