"""Layouts a user already has (class folders, ImageFolder split folders), files read by
content (TIFF, no suffix, a lying suffix), and non-square, grayscale and 16-bit images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukaug.core.errors import DataError
from leukaug.data.cache import RESIZE_POLICY, border_colour, load_or_build_cache, prepare_image
from leukaug.data.read import read_dataset

SMEAR = (205, 170, 190)  # a pink smear background


def cell(width: int, height: int, seed: int) -> np.ndarray:
    """A dark purple disc on a smear-coloured background."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = SMEAR
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(width, height) / 3) ** 2
    image[disc] = np.array([90, 40, 120]) + rng.integers(0, 20, 3)
    return image


def write(path: Path, image: np.ndarray, fmt: str, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    if mode == "L":
        picture = picture.convert("L")
    elif mode == "I;16":
        picture = Image.fromarray(image[..., 0].astype(np.uint16) * 257)
    picture.save(path, format=fmt)
    return path


def folder_per_class(root: Path, per_class: int = 4, size=(40, 40)) -> Path:
    for name in ("leukemic", "healthy"):
        for i in range(per_class):
            write(root / name / f"cell{i}.png", cell(*size, seed=i), "PNG")
    return root


def test_imagefolder_split_folders_are_detected(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        folder_per_class(tmp_path / "data" / split, per_class=2)
    dataset = read_dataset(tmp_path / "data", positive_class="leukemic")
    assert dataset.layout == "imagefolder"
    manifest = dataset.manifest
    assert manifest.groupby("source_split").size().to_dict() == {"test": 4, "train": 4, "val": 4}
    assert (manifest["label"] == manifest["image_id"].str.contains("/leukemic/")).all()
    with pytest.raises(DataError, match="--positive-class"):
        read_dataset(tmp_path / "data")


def test_imagefolder_problems_are_named(tmp_path: Path) -> None:
    folder_per_class(tmp_path / "a" / "train", per_class=1)
    with pytest.raises(DataError, match="no test/ folder"):
        read_dataset(tmp_path / "a", positive_class="leukemic")
    folder_per_class(tmp_path / "a" / "test", per_class=1)
    (tmp_path / "a" / "test" / "healthy").rename(tmp_path / "a" / "test" / "normal")
    with pytest.raises(DataError, match="different class folders"):
        read_dataset(tmp_path / "a", positive_class="leukemic")
    folder_per_class(tmp_path / "b" / "train", per_class=1)
    folder_per_class(tmp_path / "b" / "extra", per_class=1)
    with pytest.raises(DataError, match=r"cannot tell the layout: split folders \(train\)"):
        read_dataset(tmp_path / "b")


def test_all_and_hem_folders_need_no_positive_class(tmp_path: Path) -> None:
    for name in ("ALL", "hem"):
        write(tmp_path / name / "a.png", cell(30, 30, 0), "PNG")
    dataset = read_dataset(tmp_path)
    assert dict(zip(dataset.manifest["image_id"], dataset.manifest["label"], strict=True)) == {
        "ALL/a.png": 1,
        "hem/a.png": 0,
    }
    assert any("positive class (ALL): folder 'ALL'" in note for note in dataset.notes)


def test_files_are_read_by_content(tmp_path: Path) -> None:
    root = folder_per_class(tmp_path / "data", per_class=1)
    write(root / "leukemic" / "scan.tif", cell(40, 40, 5), "TIFF")
    write(root / "leukemic" / "no_suffix", cell(40, 40, 6), "TIFF")
    write(root / "healthy" / "bitmap.png", cell(40, 40, 7), "BMP")  # BMP data, .png name
    (root / "healthy" / "notes.txt").write_text("not an image")
    dataset = read_dataset(root, positive_class="leukemic")
    assert set(dataset.manifest["image_id"]) == {
        "leukemic/cell0.png", "leukemic/scan.tif", "leukemic/no_suffix",
        "healthy/cell0.png", "healthy/bitmap.png",
    }  # fmt: skip
    assert dataset.ignored == ["healthy/notes.txt"]
    assert any("bitmap.png is BMP" in note for note in dataset.notes)


def test_grayscale_and_16_bit_tiffs_are_converted_with_a_note(tmp_path: Path) -> None:
    root = folder_per_class(tmp_path / "data", per_class=1)
    write(root / "leukemic" / "grey.tiff", cell(40, 40, 1), "TIFF", mode="L")
    write(root / "healthy" / "deep.tif", cell(40, 40, 2), "TIFF", mode="I;16")
    dataset = read_dataset(root, positive_class="leukemic")
    assert dataset.modes["L"] == 1 and sum(dataset.conversions.values()) == 2
    assert any(note.startswith("1 image(s) in mode L: grey replicated") for note in dataset.notes)
    cache = load_or_build_cache(dataset.manifest, 16, tmp_path / "cache")
    grey = cache.images[cache.rows(["leukemic/grey.tiff"])[0]]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_non_square_images_are_padded_with_their_border_colour(tmp_path: Path) -> None:
    wide = cell(60, 40, 0)
    square = prepare_image(wide, 30)
    assert square.shape == (30, 30, 3)
    assert tuple(border_colour(wide)) == SMEAR
    assert tuple(square[0, 15]) == SMEAR  # the padding is the smear, not a black band
    assert square[15, 15].tolist() != list(SMEAR)  # the cell stays centred

    root = tmp_path / "data"
    write(root / "leukemic" / "tall.png", cell(30, 45, 1), "PNG")
    write(root / "healthy" / "square.png", cell(40, 40, 2), "PNG")
    dataset = read_dataset(root, positive_class="leukemic")
    assert dataset.sizes == {"30x45": 1, "40x40": 1}
    assert any(RESIZE_POLICY in note and "1 image(s) not square" in note for note in dataset.notes)
