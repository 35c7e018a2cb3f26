"""Decode and resize every image once into a memory-mapped uint8 array shared by all arms.

Layout: `cache_dir/<key>/images.npy` (N x size x size x 3, rows in sorted `image_id`
order), `image_ids.json`, `meta.json`. The key is a BLAKE2b digest of every file's bytes
and id plus the size, crop, stain normalisation (`data.stain_norm`) and `CACHE_FORMAT`, so edited, added or removed images give a
new key (invalidation), and every arm with the same data and size reuses one cache.
A cache is built in a temporary folder and renamed into place: a crash never leaves a
half-written cache under a valid key.

Resize policy (`RESIZE_POLICY`, recorded in dataset.json): optional centre crop (keep the
central `crop` fraction of each side), pad a non-square image to a square with its border
colour (the per-channel median of its outermost pixels: black for C-NMC, the smear's colour
for a raw smear), centred, then PIL bicubic resize to `size` (PIL filters over the full
source footprint when shrinking, i.e. antialiased). Nothing is stretched or cut off, and the
padding does not add a black frame a model could learn. C-NMC is 450 x 450, so this is a
plain resize unless `crop` is given.

Parallel build: every header is checked against the pixel limit first (nothing is
decoded before), then chunks of rows are decoded and resized by a pool of processes
(`workers`, default all cores) that write straight into the memory-mapped file. Each row
depends only on its own image, so the bytes are identical to a one-process build.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from leukaug.core.atomic import STORAGE_ERRNOS, storage_error
from leukaug.core.errors import ConfigError, DataError, StorageError
from leukaug.data.images import MAX_PIXELS, check_pixels, open_rgb
from leukaug.data.stain_norm import StainTarget, normalize_image

if TYPE_CHECKING:
    import pandas as pd

CACHE_FORMAT = 2  # bump when the resize policy changes, to invalidate old caches
RESIZE_POLICY = (
    "non-square images are padded to a square with their border colour (median of the "
    "outermost pixels), centred, then resized (bicubic)"
)
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, per process
# With `workers=None`, smaller builds stay in one process: a forkserver pool takes ~1 s to
# start (2-core box, loaded), about what one core needs for 256-350 450 px images (355/s,
# benchmarks/data_throughput.py); a fork pool starts in ~0.04 s.
PARALLEL_MIN_IMAGES = 256
MAX_CHUNK = 64  # rows per task: small enough to balance the load and report progress

ProgressCallback = Callable[[int, int], None]  # (images done, images in all)


@dataclass
class ImageCache:
    """Images of a manifest at one size; `images[i]` is the image of `image_ids[i]`."""

    images: np.ndarray  # read-only np.memmap, uint8 (N, size, size, 3)
    image_ids: list[str]
    size: int
    crop: float | None
    fingerprint: str
    path: Path
    stain: StainTarget | None = None  # the stain normalisation applied when it was built

    def __post_init__(self) -> None:
        self._row_of = {image_id: row for row, image_id in enumerate(self.image_ids)}

    def rows(self, image_ids: Sequence[str] | pd.Series) -> np.ndarray:
        """Row indices of `image_ids`; raises `DataError` for an id the cache does not hold."""
        try:
            return np.fromiter(
                (self._row_of[i] for i in image_ids), dtype=np.int64, count=len(image_ids)
            )
        except KeyError as error:
            raise DataError(
                f"image {error.args[0]!r} is not in the image cache {self.path}. "
                "Fix: build the cache from the same manifest (load_or_build_cache)."
            ) from None


def file_digest(path: str | Path) -> str:
    """BLAKE2b of a file's bytes, memoised per process by (path, size, mtime)."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def remember_digest(path: str, size: int, mtime_ns: int, digest: str) -> None:
    """Add a digest known from an earlier process (data/checked.py) to the memo."""
    _DIGESTS[(str(path), size, mtime_ns)] = digest


def fingerprint(
    manifest: pd.DataFrame,
    size: int,
    crop: float | None = None,
    stain: StainTarget | None = None,
) -> str:
    """Content key of the manifest's files at this size, crop and stain normalisation."""
    digest = hashlib.blake2b(digest_size=16)
    settings = {"format": CACHE_FORMAT, "size": size, "crop": crop}
    if stain is not None:
        settings["stain"] = stain.key()
    digest.update(json.dumps(settings).encode())
    for image_id, path in sorted(zip(manifest["image_id"], manifest["path"], strict=True)):
        digest.update(f"{image_id}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def border_colour(image: np.ndarray) -> np.ndarray:
    """Per-channel median of the image's outermost rows and columns (uint8, shape (3,))."""
    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(edge, axis=0).round().astype(np.uint8)


def prepare_image(image: np.ndarray, size: int, crop: float | None = None) -> np.ndarray:
    """The resize policy: centre crop, pad to square with the border colour, bicubic resize."""
    height, width = image.shape[:2]
    if crop is not None:
        keep_h, keep_w = max(1, round(height * crop)), max(1, round(width * crop))
        top, left = (height - keep_h) // 2, (width - keep_w) // 2
        image = image[top : top + keep_h, left : left + keep_w]
        height, width = image.shape[:2]
    if height != width:
        side = max(height, width)
        square = np.empty((side, side, 3), dtype=np.uint8)
        square[:] = border_colour(image)
        top, left = (side - height) // 2, (side - width) // 2
        square[top : top + height, left : left + width] = image
        image = square
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def preprocess(
    image: np.ndarray,
    size: int,
    crop: float | None = None,
    stain: StainTarget | None = None,
    where: str = "image",
) -> np.ndarray:
    """What the cache holds for one decoded image: stain normalisation (if any, on the full
    image), then the resize policy. `predict` and `explain` use it on new images."""
    if stain is not None:
        image = normalize_image(image, stain, where)
    return prepare_image(image, size, crop)


def default_workers() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_or_build_cache(
    manifest: pd.DataFrame,
    size: int,
    cache_dir: str | Path,
    crop: float | None = None,
    *,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    on_progress: ProgressCallback | None = None,
    stain: StainTarget | None = None,
) -> ImageCache:
    """The cache of `manifest`'s images at `size` (and `crop`, and `stain` normalisation),
    built once and reused.

    A build uses `workers` processes (None: every core, or one for a small manifest) and
    calls `on_progress(done, total)` as images are written; files declaring more than
    `max_pixels` pixels are refused by name before anything is decoded.
    """
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"workers = {workers}: use at least 1, or None for every core.")
    if not 8 <= int(size) <= 4096:
        raise DataError(f"image size {size} is out of range. Fix: use 8 to 4096 pixels.")
    if crop is not None and not 0.0 < crop <= 1.0:
        raise DataError(
            f"crop {crop} must be a fraction in (0, 1], e.g. 0.67 to keep the central two thirds."
        )
    cache_dir = Path(cache_dir)
    key = fingerprint(manifest, size, crop, stain)
    folder = cache_dir / key
    if not (folder / "meta.json").is_file():
        _build(manifest, size, (crop, stain), key, folder, workers, max_pixels, on_progress)
    cache = _open(folder, size, crop, key)
    cache.stain = stain
    return cache


def _build(
    manifest: pd.DataFrame,
    size: int,
    policy: tuple[float | None, StainTarget | None],
    key: str,
    folder: Path,
    workers: int | None,
    max_pixels: int,
    on_progress: ProgressCallback | None,
) -> None:
    ordered = manifest.sort_values("image_id", kind="stable")
    paths = [str(path) for path in ordered["path"]]
    for path in paths:  # headers only: nothing is decoded before every file is checked
        check_pixels(path, max_pixels)
    needed = len(ordered) * size * size * 3
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=folder.parent))
    except OSError as error:
        raise _storage(folder / "images.npy", error, needed) from None
    try:
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(ordered), size, size, 3)
        )
        del images  # the file now exists with its header; rows are written below
        _reserve(tmp / "images.npy")
        _fill(tmp / "images.npy", paths, size, policy, max_pixels, workers, on_progress)
        (tmp / "image_ids.json").write_text(json.dumps(list(ordered["image_id"])))
        crop, stain = policy
        meta = {
            "format": CACHE_FORMAT,
            "size": size,
            "crop": crop,
            "stain": stain.to_dict() if stain is not None else None,
            "fingerprint": key,
            "n": len(ordered),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        for name in ("images.npy", "image_ids.json", "meta.json"):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        try:
            os.replace(tmp, folder)  # atomic; fails if another process finished first
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    except OSError as error:
        raise _storage(folder / "images.npy", error, needed) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _storage(path: Path, error: OSError, needed: int) -> OSError | StorageError:
    """A full disk or unwritable cache folder as a `StorageError`; other errors unchanged."""
    return storage_error(path, error, needed) if error.errno in STORAGE_ERRNOS else error


def _reserve(file: Path) -> None:
    """Allocate the whole cache file now: a full disk is then an ENOSPC here, not a SIGBUS
    when a memory-mapped row is written (file systems without fallocate skip this)."""
    fd = os.open(file, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def _fill(
    file: Path,
    paths: list[str],
    size: int,
    policy: tuple[float | None, StainTarget | None],
    max_pixels: int,
    workers: int | None,
    on_progress: ProgressCallback | None,
) -> None:
    """Decode + resize every path into its row of `file`, in one process or a pool."""
    total = len(paths)
    if workers is None:
        workers = default_workers() if total >= PARALLEL_MIN_IMAGES else 1
    chunk = max(1, min(MAX_CHUNK, math.ceil(total / (4 * workers))))
    starts = range(0, total, chunk)
    processes = min(workers, len(starts))
    done = 0
    if processes <= 1:
        for start in starts:
            done += _fill_rows(file, start, paths[start : start + chunk], size, policy, max_pixels)
            if on_progress is not None:
                on_progress(done, total)
        return
    pool = ProcessPoolExecutor(processes, mp_context=_process_context())
    try:
        futures = [
            pool.submit(
                _fill_rows, file, start, paths[start : start + chunk], size, policy, max_pixels
            )
            for start in starts
        ]
        for future in as_completed(futures):
            done += future.result()
            if on_progress is not None:
                on_progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _process_context() -> multiprocessing.context.BaseContext:
    """fork when this process runs one thread (fast: no interpreter start, no re-import of
    the caller's script); forkserver otherwise, since forking a threaded process can copy
    a lock that another thread holds (the caller's script then needs the usual
    `if __name__ == "__main__":` guard)."""
    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _fill_rows(
    file: Path,
    start: int,
    paths: list[str],
    size: int,
    policy: tuple[float | None, StainTarget | None],
    max_pixels: int,
) -> int:
    """Write rows `start ...` of the cache file (in a worker process or in this one)."""
    images = np.load(file, mmap_mode="r+")
    crop, stain = policy
    for offset, path in enumerate(paths):
        image, _ = open_rgb(path, max_pixels)
        images[start + offset] = preprocess(image, size, crop, stain, where=path)
    images.flush()
    return len(paths)


def _open(folder: Path, size: int, crop: float | None, key: str) -> ImageCache:
    try:
        image_ids = json.loads((folder / "image_ids.json").read_text())
        images = np.load(folder / "images.npy", mmap_mode="r")
    except (OSError, ValueError) as error:
        raise DataError(
            f"{folder}: the image cache is unreadable ({error}). Fix: delete this folder; it will be rebuilt."
        ) from None
    if images.shape != (len(image_ids), size, size, 3) or images.dtype != np.uint8:
        raise DataError(
            f"{folder}: the image cache has shape {images.shape}, not ({len(image_ids)}, {size}, {size}, 3). Fix: delete this folder; it will be rebuilt."
        )
    return ImageCache(
        images=images, image_ids=image_ids, size=size, crop=crop, fingerprint=key, path=folder
    )
