"""Train / validation / test splits of a manifest.

`subject` (default): validation holds about `val_fraction` of the training subjects of
EACH class (scikit-learn's `GroupShuffleSplit` run per class, so the split is stratified
by class and no subject spans two splits). `image`: the seed paper's split, a random
`val_fraction` of training images stratified by class; cells of one patient then land in
both train and validation, which inflates validation scores (it warns).
The test split is always the source test set.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from leukaug import CLASS_NAMES
from leukaug.core.errors import ConfigError, DataError

STRATEGIES = ("subject", "image")
SPLITS = ("train", "val", "test")


@dataclass
class SplitReport:
    """Subjects and images per class per split, and the subjects found in two splits."""

    strategy: str
    counts: pd.DataFrame  # columns: split, class, subjects, images
    leaked_subjects: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def split_manifest(
    manifest: pd.DataFrame, strategy: str = "subject", val_fraction: float = 0.2, seed: int = 0
) -> pd.DataFrame:
    """A copy of `manifest` with a `split` column in {"train", "val", "test"}."""
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"unknown split strategy {strategy!r}. Fix: use one of {', '.join(STRATEGIES)}."
        )
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction {val_fraction} must be between 0 and 1 (exclusive), e.g. 0.2."
        )
    frame = manifest.copy()
    frame["split"] = np.where(frame["source_split"] == "test", "test", "train")
    train_rows = frame.index[frame["split"] == "train"]
    if len(train_rows) == 0:
        raise DataError(
            "the data set has no training images, so there is nothing to split. Fix: add training data."
        )
    if strategy == "subject":
        val_rows = _subject_level_val(frame.loc[train_rows], val_fraction, seed)
    else:
        val_rows = _image_level_val(frame.loc[train_rows], val_fraction, seed)
    frame.loc[val_rows, "split"] = "val"
    if strategy == "subject":
        check_no_subject_leak(frame)
    else:
        leaked = _leaked_subjects(frame)
        warnings.warn(_leak_message(leaked), UserWarning, stacklevel=2)
    return frame


def _subject_level_val(train: pd.DataFrame, val_fraction: float, seed: int) -> pd.Index:
    """Rows of about `val_fraction` of each class's training subjects (at least one)."""
    val_rows = []
    for label, rows in train.groupby("label"):
        subjects = rows["subject"].unique()
        if len(subjects) < 2:
            raise DataError(
                f"class {CLASS_NAMES[int(label)]} has only {len(subjects)} training subject, so no subject "
                "can be held out for validation. Fix: add subjects, or use the 'image' split strategy."
            )
        splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        _, val_index = next(splitter.split(rows, groups=rows["subject"]))
        val_rows.append(rows.index[val_index])
    return pd.Index(np.concatenate(val_rows))


def _image_level_val(train: pd.DataFrame, val_fraction: float, seed: int) -> pd.Index:
    stratify = train["label"] if train["label"].value_counts().min() >= 2 else None
    _, val_index = train_test_split(
        train.index, test_size=val_fraction, random_state=seed, stratify=stratify
    )
    return pd.Index(val_index)


def _leaked_subjects(frame: pd.DataFrame) -> list[str]:
    splits_per_subject = frame.groupby("subject")["split"].nunique()
    return sorted(splits_per_subject[splits_per_subject > 1].index.astype(str))


def _leak_message(leaked: list[str]) -> str:
    return (
        f"image-level split: {len(leaked)} subject(s) have cells in more than one split, so "
        "validation scores are optimistic (the model has seen the same patients). Use the "
        "'subject' strategy to avoid this."
    )


def check_no_subject_leak(frame: pd.DataFrame) -> None:
    """Raise `DataError` if any subject has images in two splits."""
    leaked = _leaked_subjects(frame)
    if leaked:
        shown = ", ".join(leaked[:5]) + (" ..." if len(leaked) > 5 else "")
        raise DataError(
            f"{len(leaked)} subject(s) span two splits ({shown}). A subject-level split must keep "
            "each patient in one split. Fix: check that test subjects do not also appear in the "
            "training data, and that subject ids are correct."
        )


def split_report(frame: pd.DataFrame, strategy: str = "subject") -> SplitReport:
    """Counts of subjects and images per split x class (ALL, HEM), plus leakage."""
    records = []
    for split in SPLITS:
        for label in (1, 0):
            rows = frame[(frame["split"] == split) & (frame["label"] == label)]
            records.append(
                {
                    "split": split,
                    "class": CLASS_NAMES[label],
                    "subjects": rows["subject"].nunique(),
                    "images": len(rows),
                }
            )
    leaked = _leaked_subjects(frame)
    notes = [_leak_message(leaked)] if leaked else []
    return SplitReport(
        strategy=strategy, counts=pd.DataFrame(records), leaked_subjects=leaked, warnings=notes
    )
