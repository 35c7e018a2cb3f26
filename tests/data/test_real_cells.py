"""The 40 real C-NMC 2019 cells of ../shared/real-cells (copied into tmp_path, never written
to) read in three layouts, with their download quirks: a lower-case `h` subject, BMP data
under a `.png` name, subjects with one and with several images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from leukaug.core.errors import DataError
from leukaug.data.read import read_dataset
from real_cells import (
    ALL_SUBJECTS,
    HEM_SUBJECTS,
    IMAGEFOLDER_TEST,
    MISNAMED,
    class_folder_layout,
    cnmc_subject,
    imagefolder_layout,
    kaggle_layout,
)


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
