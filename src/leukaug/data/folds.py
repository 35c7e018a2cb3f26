"""Cross-validation folds of a manifest (`[data] cv_folds`).

`assign_folds` puts every subject in one of K test folds: scikit-learn's
`StratifiedGroupKFold` with the subject as the group (no subject in two folds) and the label
as the stratum, shuffled by `split_seed`, so the same settings always give the same folds.
With the `image` split strategy every image is its own group. `fold_manifest` is fold k's
split: the fold's images are `test`, and within the other images the validation part is
split as usual (`leukaug.data.split.split_manifest`, subject-level by default).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from leukaug import CLASS_NAMES
from leukaug.core.errors import ConfigError, DataError
from leukaug.data.split import split_manifest

FOLD_COLUMN = "cv_fold"  # the fold whose test part holds the image


def assign_folds(
    manifest: pd.DataFrame, n_folds: int, seed: int = 0, strategy: str = "subject"
) -> pd.Series:
    """Fold index (0..n_folds-1) of every image, subject-level and stratified by label."""
    if n_folds < 2:
        raise ConfigError(f"data.cv_folds = {n_folds}: cross-validation needs at least 2 folds.")
    if (manifest["source_split"] == "test").any():
        n_test = int((manifest["source_split"] == "test").sum())
        raise ConfigError(
            f"data.cv_folds = {n_folds}, but the data set already has a test split "
            f"({n_test} test images). Cross-validation makes its own test folds: remove "
            "cv_folds to evaluate on the data set's test split, or give the data without one."
        )
    group_column, unit = ("subject", "subject") if strategy == "subject" else ("image_id", "image")
    for label, part in manifest.groupby("label"):
        n_groups = part[group_column].nunique()
        if n_groups < n_folds:
            raise DataError(
                f"data.cv_folds = {n_folds}, but class {CLASS_NAMES[int(label)]} has only "
                f"{n_groups} {unit}(s): every fold needs at least one {unit} of each class. "
                f"Fix: set cv_folds to at most {n_groups}, or add data."
            )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(manifest), -1, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn's "least populated class" note
        for fold, (_, test_index) in enumerate(
            splitter.split(manifest, manifest["label"], groups=manifest[group_column].to_numpy())
        ):
            folds[test_index] = fold
    return pd.Series(folds, index=manifest.index, name=FOLD_COLUMN)


def fold_manifest(
    manifest: pd.DataFrame,
    fold: int,
    strategy: str = "subject",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> pd.DataFrame:
    """Fold `fold`'s split of a manifest with a `cv_fold` column: its images are `test`, the
    others are split into train and val as a hold-out study splits its training data."""
    source = np.where(manifest[FOLD_COLUMN] == fold, "test", "train")
    with warnings.catch_warnings():
        if strategy == "image":  # said once by the study, not once per fold
            warnings.simplefilter("ignore", UserWarning)
        split = split_manifest(
            manifest.assign(source_split=source),
            strategy=strategy,
            val_fraction=val_fraction,
            seed=seed,
        )
    return split.assign(source_split=manifest["source_split"])


def fold_counts(manifest: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """dataset.json's counts for cross-validation: per test fold ("fold 0", ...) and class
    (ALL, HEM) its images and subjects."""
    counts = {}
    for fold, part in sorted(manifest.groupby(FOLD_COLUMN)):
        counts[f"fold {fold}"] = {
            CLASS_NAMES[label]: {
                "images": int((part["label"] == label).sum()),
                "subjects": int(part.loc[part["label"] == label, "subject"].nunique()),
            }
            for label in sorted(CLASS_NAMES, reverse=True)
        }
    return counts


def folds_record(n_folds: int, seed: int, strategy: str) -> dict[str, Any]:
    """dataset.json's `cv` entry: the settings that fix the folds."""
    return {"folds": n_folds, "seed": seed, "strategy": strategy}


def fold_subjects(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """dataset.json's `fold_subjects`: the subjects each test fold holds (the assignment
    itself, so anyone can check which patients a fold held out)."""
    return {
        f"fold {fold}": sorted(str(s) for s in part["subject"].unique())
        for fold, part in sorted(manifest.groupby(FOLD_COLUMN))
    }
