"""The 40 real C-NMC 2019 cells of ../shared/real-cells (copied into tmp_path, never written
to) read in three layouts, with their download quirks: a lower-case `h` subject, BMP data
under a `.png` name, subjects with one and with several images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from leukaug.core.errors import DataError
from leukaug.data.read import read_dataset

REPO = Path(__file__).resolve().parents[2]
REAL_CELLS_ENV = "LEUKAUG_REAL_CELLS"  # where a checkout without ../shared keeps them
ALL_SUBJECTS = {"1", "2", "3", "11", "13", "14", "15", "16", "17", "23", "53"}
HEM_SUBJECTS = {"H2", "H3", "H6", "H10", "H12"}
MISNAMED = {"UID_H10_100_1_hem.png", "UID_H10_100_3_hem.png", "UID_H10_103_3_hem.png",
            "UID_11_16_2_all.png"}  # fmt: skip
IMAGEFOLDER_TEST = {"1", "2", "11", "H2", "H10"}  # subjects put in test/


def real_cells_folder() -> Path | None:
    """../shared/real-cells/cnmc-samples beside the checkout, or $LEUKAUG_REAL_CELLS."""
    for candidate in (
        os.environ.get(REAL_CELLS_ENV),
        REPO.parent / "shared/real-cells/cnmc-samples",
    ):
        if candidate and (Path(candidate) / "all").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_cells() -> Path:
    folder = real_cells_folder()
    if folder is None:
        pytest.skip(f"no ../shared/real-cells/cnmc-samples beside {REPO}; set ${REAL_CELLS_ENV}")
    return folder


def cells(real_cells: Path) -> list[tuple[Path, str]]:
    """(file, class folder name) of every real cell."""
    return [(p, name) for name in ("all", "hem") for p in sorted((real_cells / name).iterdir())]


def cnmc_subject(name: str) -> str:
    return name.split("_")[1].upper()


def kaggle_layout(real_cells: Path, root: Path) -> Path:
    """C-NMC_Leukemia/training_data/fold_0/{all,hem}/ (no test set)."""
    for path, name in cells(real_cells):
        target = root / "C-NMC_Leukemia/training_data/fold_0" / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return root / "C-NMC_Leukemia"


def class_folder_layout(real_cells: Path, root: Path) -> Path:
    """cells/{all,hem}/ (a folder per class, no test set)."""
    for path, name in cells(real_cells):
        (root / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / name / path.name)
    return root


def imagefolder_layout(real_cells: Path, root: Path) -> Path:
    """{train,test}/{all,hem}/, the IMAGEFOLDER_TEST subjects in test/."""
    for path, name in cells(real_cells):
        split = "test" if cnmc_subject(path.name) in IMAGEFOLDER_TEST else "train"
        (root / split / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / split / name / path.name)
    return root


def check_subjects_and_labels(manifest: pd.DataFrame) -> None:
    assert len(manifest) == 40
    labels = manifest.groupby("subject")["label"].first()
    assert set(labels.index[labels == 1]) == ALL_SUBJECTS
    assert set(labels.index[labels == 0]) == HEM_SUBJECTS  # `h3` is subject H3
    for image_id, label, subject in manifest[["image_id", "label", "subject"]].itertuples(
        index=False
    ):
        name = Path(image_id).name
        assert label == (1 if name.lower().endswith(("_all.bmp", "_all.png")) else 0)
        assert subject == cnmc_subject(name)
    counts = manifest["subject"].value_counts()
    assert counts.min() == 1 and counts.max() > 1  # subjects with one and with several cells


def check_misnamed_note(notes: list[str]) -> None:
    assert any(note.startswith("4 image(s) named as another format") for note in notes)


def test_kaggle_layout_of_real_cells(real_cells: Path, tmp_path: Path) -> None:
    dataset = read_dataset(kaggle_layout(real_cells, tmp_path))
    assert dataset.layout == "cnmc_kaggle"
    check_subjects_and_labels(dataset.manifest)
    assert (dataset.manifest["fold"] == 0).all()
    assert dataset.modes == {"RGB": 40} and dataset.sizes == {"450x450": 40}
    check_misnamed_note(dataset.notes)


def test_class_folder_layout_of_real_cells(real_cells: Path, tmp_path: Path) -> None:
    dataset = read_dataset(class_folder_layout(real_cells, tmp_path / "cells"))
    assert dataset.layout == "folders"  # all/ and hem/: no --positive-class needed
    check_subjects_and_labels(dataset.manifest)
    assert (dataset.manifest["source_split"] == "train").all()
    check_misnamed_note(dataset.notes)
    assert {Path(i).name for i in dataset.manifest["image_id"]} >= MISNAMED


def test_imagefolder_layout_of_real_cells(real_cells: Path, tmp_path: Path) -> None:
    dataset = read_dataset(imagefolder_layout(real_cells, tmp_path / "split"))
    assert dataset.layout == "imagefolder"
    manifest = dataset.manifest
    check_subjects_and_labels(manifest)
    in_test = manifest["subject"].isin(IMAGEFOLDER_TEST)
    assert ((manifest["source_split"] == "test") == in_test).all()
    assert manifest["image_id"].str.match(r"^(train|test)/(all|hem)/").all()


def test_real_cells_in_both_split_folders_are_a_leak(real_cells: Path, tmp_path: Path) -> None:
    from leukaug.data.split import split_manifest

    root = imagefolder_layout(real_cells, tmp_path / "split")
    moved = next((root / "train/all").glob("UID_13_*"))
    shutil.move(moved, root / "test/all" / moved.name)  # subject 13 now in train and test
    with pytest.raises(DataError, match="span two splits"):
        split_manifest(read_dataset(root).manifest)
