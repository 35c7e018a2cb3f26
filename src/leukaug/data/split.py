"""Train / validation / test splits of a manifest.

`subject` (default): validation holds about `val_fraction` of the training subjects of
EACH class (scikit-learn's `GroupShuffleSplit` run per class, so the split is stratified
by class and no subject spans two splits). `image`: the seed paper's split, a random
`val_fraction` of training images stratified by class; cells of one patient then land in
both train and validation, which inflates validation scores (it warns when a subject
really is in two splits).

The test split is the source test set. A data set without one (a folder per class, a CSV
without a `split` column) gets a held-out test set with `test_fraction`: about that
fraction of each class's subjects (stratified, subject-level, fixed by `seed`); when the
data have no subject ids (every image its own subject) this is an image-level hold-out and
a warning says so. A source validation set (an ImageFolder `val/` folder) is used as it
is instead of drawing one.
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
    manifest: pd.DataFrame,
    strategy: str = "subject",
    val_fraction: float = 0.2,
    seed: int = 0,
    test_fraction: float | None = None,
) -> pd.DataFrame:
    """A copy of `manifest` with a `split` column in {"train", "val", "test"}.

    `test_fraction` holds out a test set from a data set that has none (see the module).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"unknown split strategy {strategy!r}. Fix: use one of {', '.join(STRATEGIES)}."
        )
    _check_fraction("val_fraction", val_fraction, "0.2")
    frame = manifest.copy()
    frame["split"] = np.where(
        frame["source_split"].isin(["test", "val"]), frame["source_split"], "train"
    )
    if test_fraction is not None:
        _check_fraction("test_fraction", test_fraction, "0.3")
        held_out = _held_out_test(frame, test_fraction, seed)
        frame.loc[held_out, "split"] = "test"
    train_rows = frame.index[frame["split"] == "train"]
    if len(train_rows) == 0:
        raise DataError(
            "the data set has no training images, so there is nothing to split. Fix: add training data."
        )
    if not (frame["split"] == "val").any():  # no source validation set: draw one
        if strategy == "subject":
            val_rows = _subject_level_val(frame.loc[train_rows], val_fraction, seed)
        else:
            val_rows = _image_level_val(frame.loc[train_rows], val_fraction, seed)
        frame.loc[val_rows, "split"] = "val"
    if strategy == "subject":
        check_no_subject_leak(frame)
    else:
        leaked = _leaked_subjects(frame)
        if leaked:  # only when a subject really is in two splits
            warnings.warn(_leak_message(leaked), UserWarning, stacklevel=2)
    return frame


def _check_fraction(name: str, value: float, example: str) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} {value} must be between 0 and 1 (exclusive), e.g. {example}.")


def has_subject_ids(manifest: pd.DataFrame) -> bool:
    """False when every image is its own subject (the layout gave no subject ids)."""
    return manifest["subject"].nunique() < len(manifest)


def _held_out_test(frame: pd.DataFrame, test_fraction: float, seed: int) -> pd.Index:
    """Rows of about `test_fraction` of each class's subjects, for a data set with no test set."""
    source_test = int((frame["split"] == "test").sum())
    if source_test:
        raise ConfigError(
            f"test_fraction = {test_fraction}, but the data set already has a test set "
            f"({source_test} images from its layout). Fix: remove test_fraction to use that "
            "test set, or merge the data into one training set first."
        )
    if not has_subject_ids(frame):
        warnings.warn(
            "the data have no subject ids (each image is its own subject), so the held-out "
            "test set is drawn image by image; cells of one patient may be in training and "
            "test. Fix: put each subject's images in a subfolder of its class folder, or give "
            "a CSV with a subject column.",
            UserWarning,
            stacklevel=3,
        )
    rows = []
    for label, part in frame[frame["split"] == "train"].groupby("label"):
        subjects = part["subject"].unique()
        if len(subjects) < 3:
            raise DataError(
                f"class {CLASS_NAMES[int(label)]} has {len(subjects)} subject(s): too few to hold "
                "out a test set and keep training and validation subjects. Fix: add subjects, or "
                "give a test set (a test/ folder, or a CSV split column)."
            )
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        _, test_index = next(splitter.split(part, groups=part["subject"]))
        rows.append(part.index[test_index])
    return pd.Index(np.concatenate(rows))


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
