"""Cross-validation folds: subject-level, stratified, fixed by the seed; each fold's split."""

from __future__ import annotations

import pandas as pd
import pytest

from leukaug.core.errors import ConfigError, DataError
from leukaug.data.folds import (
    FOLD_COLUMN,
    assign_folds,
    fold_counts,
    fold_manifest,
    fold_subjects,
)


def manifest(subjects_per_class: int = 6, images: int = 3) -> pd.DataFrame:
    rows = []
    for label, prefix in ((1, "A"), (0, "H")):
        for subject in range(subjects_per_class):
            for image in range(images + subject % 2):  # uneven subject sizes
                name = f"{prefix}{subject}"
                rows.append(
                    {
                        "image_id": f"{name}/{image}.png",
                        "path": f"/x/{name}/{image}.png",
                        "label": label,
                        "subject": name,
                        "source_split": "train",
                        "fold": -1,
                    }
                )
    return pd.DataFrame(rows).sort_values("image_id", ignore_index=True)


def test_every_subject_is_in_one_fold_and_every_fold_has_both_classes() -> None:
    frame = manifest()
    folds = assign_folds(frame, 3, seed=0)
    assert set(folds) == {0, 1, 2}
    assert (frame.assign(f=folds).groupby("subject")["f"].nunique() == 1).all()
    for _, part in frame.groupby(folds):
        assert set(part["label"]) == {0, 1}
        assert part["subject"].nunique() == 4  # 12 subjects, stratified: 2 + 2 per fold


def test_the_split_seed_fixes_the_folds() -> None:
    frame = manifest(subjects_per_class=10)
    assert assign_folds(frame, 5, seed=3).equals(assign_folds(frame, 5, seed=3))
    assert not assign_folds(frame, 5, seed=3).equals(assign_folds(frame, 5, seed=4))


def test_image_strategy_folds_images() -> None:
    frame = manifest(subjects_per_class=2, images=4)
    folds = assign_folds(frame, 4, seed=0, strategy="image")
    assert set(folds) == {0, 1, 2, 3}
    assert (frame.assign(f=folds).groupby("subject")["f"].nunique() > 1).any()


def test_more_folds_than_subjects_of_a_class_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"cv_folds = 7.*only 6 subject\(s\).*at most 6"):
        assign_folds(manifest(), 7)


def test_a_source_test_split_is_refused() -> None:
    frame = manifest()
    frame.loc[frame["subject"] == "A0", "source_split"] = "test"
    with pytest.raises(ConfigError, match=r"already has a test split \(3 test images\)"):
        assign_folds(frame, 2)


def test_fold_manifest_holds_out_the_fold_and_splits_validation_by_subject() -> None:
    frame = manifest(subjects_per_class=8)
    frame[FOLD_COLUMN] = assign_folds(frame, 4, seed=1)
    for fold in range(4):
        split = fold_manifest(frame, fold, val_fraction=0.25, seed=1)
        assert (split["split"] == "test").equals(frame[FOLD_COLUMN] == fold)
        assert set(split["split"]) == {"train", "val", "test"}
        assert (split.groupby("subject")["split"].nunique() == 1).all()
        assert split["source_split"].equals(frame["source_split"])  # the manifest's own column


def test_counts_and_subjects_per_fold() -> None:
    frame = manifest()
    frame[FOLD_COLUMN] = assign_folds(frame, 2, seed=0)
    counts = fold_counts(frame)
    assert sum(c["ALL"]["images"] + c["HEM"]["images"] for c in counts.values()) == len(frame)
    subjects = fold_subjects(frame)
    assert sorted(s for names in subjects.values() for s in names) == sorted(
        frame["subject"].unique()
    )
