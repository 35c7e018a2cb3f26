"""The image cache: round trip, reuse, invalidation, atomic build, resize policy."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukaug.core.errors import ConfigError, DataError
from leukaug.data import cache as cache_module
from leukaug.data.cache import load_or_build_cache, prepare_image
from leukaug.data.images import open_rgb
from leukaug.data.read import read_dataset


def test_round_trip(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    cache = load_or_build_cache(tiny_manifest, 40, tmp_path)
    assert cache.images.shape == (len(tiny_manifest), 40, 40, 3) and cache.images.dtype == np.uint8
    assert cache.image_ids == sorted(tiny_manifest["image_id"])
    assert not cache.images.flags.writeable
    picks = list(tiny_manifest["image_id"].sample(5, random_state=0))
    rows = cache.rows(picks)
    for image_id, row in zip(picks, rows, strict=True):
        path = tiny_manifest.loc[tiny_manifest["image_id"] == image_id, "path"].iloc[0]
        np.testing.assert_array_equal(cache.images[row], open_rgb(path)[0])  # same size: no resize
    with pytest.raises(DataError, match="not in the image cache"):
        cache.rows(["nope.bmp"])


def test_reused_and_resized(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    first = load_or_build_cache(tiny_manifest, 24, tmp_path)
    mtime = (first.path / "images.npy").stat().st_mtime_ns
    again = load_or_build_cache(tiny_manifest.sample(frac=1, random_state=0), 24, tmp_path)
    assert again.path == first.path and (again.path / "images.npy").stat().st_mtime_ns == mtime
    assert again.images.shape[1:] == (24, 24, 3)
    other = load_or_build_cache(tiny_manifest, 24, tmp_path, crop=0.5)
    assert other.path != first.path
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


def test_changed_data_invalidates(tiny_cnmc: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_cnmc, root)
    manifest = read_dataset(root).manifest
    before = load_or_build_cache(manifest, 16, tmp_path / "cache")
    path = Path(manifest["path"].iloc[0])
    pixels = np.asarray(Image.open(path)).copy()
    pixels[:, :] = 255 - pixels
    Image.fromarray(pixels).save(path, format="BMP")
    after = load_or_build_cache(read_dataset(root).manifest, 16, tmp_path / "cache")
    assert after.fingerprint != before.fingerprint
    assert not np.array_equal(after.images[0], before.images[0])


def test_crash_leaves_no_cache(
    tiny_manifest: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = cache_module.prepare_image

    def failing(image: np.ndarray, size: int, crop: float | None = None) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(image, size, crop)

    monkeypatch.setattr(cache_module, "prepare_image", failing)
    with pytest.raises(KeyboardInterrupt):
        load_or_build_cache(tiny_manifest, 20, tmp_path, workers=1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(cache_module, "prepare_image", real)
    assert load_or_build_cache(tiny_manifest, 20, tmp_path).images.shape[0] == len(tiny_manifest)


def test_resize_policy() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:30, 20:40] = 200  # a centred square
    square = prepare_image(image, 30)
    assert square.shape == (30, 30, 3)
    assert square[0, 0].max() == 0 and square[15, 15].min() > 150  # padded with black, centred
    cropped = prepare_image(image, 20, crop=0.5)  # central 20 x 30 -> padded -> 20 x 20
    assert cropped.shape == (20, 20, 3) and cropped[10, 10].min() > 150
    with pytest.raises(DataError, match="crop"):
        load_or_build_cache(pd.DataFrame(columns=["image_id", "path"]), 16, "unused", crop=1.5)


def test_parallel_build_has_the_same_bytes(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    one = load_or_build_cache(tiny_manifest, 24, tmp_path / "one", crop=0.8, workers=1)
    many = load_or_build_cache(
        tiny_manifest,
        24,
        tmp_path / "many",
        crop=0.8,
        workers=3,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert (one.path / "images.npy").read_bytes() == (many.path / "images.npy").read_bytes()
    assert one.image_ids == many.image_ids and one.fingerprint == many.fingerprint
    n = len(tiny_manifest)
    assert len(seen) > 3 and seen[-1] == (n, n)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})


def test_parallel_build_beside_another_thread(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    """With other threads alive (a study's batch thread) the pool does not fork this process."""
    release = threading.Event()
    waiting = threading.Thread(target=release.wait)
    waiting.start()
    try:
        built = load_or_build_cache(tiny_manifest, 20, tmp_path / "many", workers=2)
    finally:
        release.set()
        waiting.join()
    alone = load_or_build_cache(tiny_manifest, 20, tmp_path / "one", workers=1)
    assert np.array_equal(built.images, alone.images)


def test_parallel_build_failure_names_the_file_and_leaves_no_cache(
    tiny_cnmc: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_cnmc, root)
    manifest = read_dataset(root).manifest
    broken = Path(manifest["path"].iloc[-1])
    broken.write_bytes(broken.read_bytes()[:200])  # truncated after reading
    with pytest.raises(DataError, match=rf"{broken.name}: cannot read this image"):
        load_or_build_cache(manifest, 16, tmp_path / "cache", workers=2)
    assert list((tmp_path / "cache").iterdir()) == []


def test_workers_must_be_positive(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workers = 0"):
        load_or_build_cache(tiny_manifest, 16, tmp_path, workers=0)
