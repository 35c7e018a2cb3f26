"""Data and figures of a study: the embedded synthetic data, the split manifest, one image
cache per image size, the facts for `dataset.json`, and the report's Figures 1-2 (drawn
from the image cache once the arms have run).

`leukaug run` (every arm) and `leukaug train` (a one-arm study) prepare their data here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leukaug import CLASS_NAMES
from leukaug.augment import AugmentationSpec
from leukaug.core.atomic import STORAGE_ERRNOS, storage_error
from leukaug.core.errors import ConfigError, DataError
from leukaug.core.layout import StudyFolder
from leukaug.core.user_cache import default_cache_dir
from leukaug.data.cache import RESIZE_POLICY, ImageCache, load_or_build_cache
from leukaug.data.checked import record_path
from leukaug.data.folds import (
    FOLD_COLUMN,
    assign_folds,
    fold_counts,
    fold_manifest,
    fold_subjects,
    folds_record,
)
from leukaug.data.images import MAX_PIXELS
from leukaug.data.read import read_dataset
from leukaug.data.split import has_subject_ids, split_manifest
from leukaug.data.stain_norm import StainTarget, reference_target, training_target
from leukaug.data.synth_config import MARKER_FILE, SynthConfig, settings_identity
from leukaug.study.study_file import StudyConfig

log = logging.getLogger(__name__)
SAMPLE_CELLS_PER_CLASS = 6  # Figure 1
PREVIEW_CELLS_PER_CLASS = 3  # Figure 2


@dataclass
class PreparedData:
    """The split manifest, where its caches live, and the facts for dataset.json."""

    manifest: pd.DataFrame  # with a `split` column (cv_folds: every image "train", and `cv_fold`)
    cache_dir: Path
    crop: float | None
    caches: dict[int, ImageCache]
    info: dict[str, Any]
    folds: dict[int, pd.DataFrame] = field(default_factory=dict)  # cv_folds: fold -> its split


# --------------------------------------------------------------------------- data


def cache_root(config: StudyConfig) -> Path:
    """The study's cache folder: data.cache_dir, else the user cache folder (never the cwd)."""
    if config.data.cache_dir:
        return Path(config.data.cache_dir).resolve()
    return default_cache_dir()


def embedded_data_dir(config: StudyConfig) -> Path:
    """Where the embedded synthetic data go: data.dir, else <cache>/embedded-<settings hash>."""
    if config.data.dir:
        return Path(config.data.dir).resolve()
    text = json.dumps(_synth_config_dict(config), sort_keys=True)
    return cache_root(config) / f"embedded-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _synth_config_dict(config: StudyConfig) -> dict[str, Any]:
    return SynthConfig(**config.data.synth).identity()


def ensure_embedded_data(config: StudyConfig) -> Path:
    """Generate the synthetic data set unless a complete one with the same settings exists."""
    settings = _synth_config_dict(config)
    root = embedded_data_dir(config)
    record = root / "synthetic_config.json"
    if record.is_file():
        existing = json.loads(record.read_text(encoding="utf-8")).get("config")
        if isinstance(existing, dict) and settings_identity(existing) == settings:
            return root
        raise ConfigError(
            f"{root} holds synthetic data generated with other settings ({existing}); "
            f"delete it or set data.dir to another folder for settings {settings}."
        )
    if (
        not (root / MARKER_FILE).is_file()
        and root.exists()
        and (not root.is_dir() or any(root.iterdir()))
    ):
        raise ConfigError(
            f"data.dir = {root} is not empty and holds no synthetic data set, so the embedded "
            "data cannot be generated there; set data.dir to a new or empty folder."
        )
    synth = SynthConfig(**settings)
    synth.validate()
    from leukaug.data.synth import generate  # the generator loads only to generate

    log.info("Generating the synthetic data set into %s ...", root)
    try:
        generate(root, synth)
    except OSError as error:  # a full disk or read-only folder: named, like every write
        if error.errno not in STORAGE_ERRNOS:
            raise
        written = Path(error.filename) if error.filename else root / MARKER_FILE
        raise storage_error(written, error, None) from None
    return root


def prepare_data(
    config: StudyConfig, image_sizes: Sequence[int], *, need_test: bool = True
) -> PreparedData:
    """Read (or generate) the data, split it, and build one image cache per size.

    A study needs a test split (`need_test`; `check_splits`); `leukaug train` does not (an
    arm trained on class folders is judged on its validation split)."""
    data = config.data
    if data.embedded:
        root = ensure_embedded_data(config)
        dataset = read_dataset(root, check_record=record_path(cache_root(config), root, MAX_PIXELS))
    else:
        root = Path(data.source).resolve()
        dataset = read_dataset(
            root,
            layout=data.layout,
            positive_class=data.positive_class,
            labels_csv=data.labels_csv,
            check_record=record_path(cache_root(config), root, MAX_PIXELS),
        )
    folds: dict[int, pd.DataFrame] = {}
    if data.cv_folds is None:
        manifest = split_manifest(
            dataset.manifest,
            strategy=data.split,
            val_fraction=data.val_fraction,
            seed=data.split_seed,
            test_fraction=data.test_fraction,
        )
        check_splits(manifest, root, need_test=need_test)  # before any cache or training
    else:
        manifest, folds = cross_validation_splits(dataset.manifest, config)
    cache_dir = cache_root(config)
    stain = stain_target(config, manifest)
    caches = {}
    for size in sorted(set(image_sizes)):
        log.info("Image cache at %d px ...", size)
        caches[size] = load_or_build_cache(manifest, size, cache_dir, crop=data.crop, stain=stain)
    info = {
        "root": str(root),
        "layout": str(dataset.layout),
        "synthetic": bool(data.embedded),
        "synth": _synth_config_dict(config) if data.embedded else None,
        "split": {
            "strategy": data.split,
            "val_fraction": data.val_fraction,
            "seed": data.split_seed,
            "test": (
                f"{data.cv_folds}-fold cross-validation: each fold's subjects held out once"
                if folds
                else _test_source(dataset.manifest, data.test_fraction)
            ),
        },
        "counts": fold_counts(manifest) if folds else split_counts(manifest),
        "ignored": len(dataset.ignored),
        "conversions": dict(dataset.conversions),
        "image_sizes_found": dict(dataset.sizes),
        "resize": RESIZE_POLICY,
        "normalize": stain.to_dict() | {"applied": stain.describe()} if stain else None,
        "notes": list(dataset.notes),
        "image_sizes": sorted(caches),
        "split_fingerprint": split_fingerprint(manifest, folds),
    }
    if folds:
        info["cv"] = folds_record(len(folds), data.split_seed, data.split)
        info["fold_subjects"] = fold_subjects(manifest)
    return PreparedData(manifest, cache_dir, data.crop, caches, info, folds)


def cross_validation_splits(
    manifest: pd.DataFrame, config: StudyConfig
) -> tuple[pd.DataFrame, dict[int, pd.DataFrame]]:
    """`[data] cv_folds`: the manifest with its `cv_fold` (every image `train`: each trains
    in the other folds) and each fold's split (data/folds.py)."""
    data = config.data
    assert data.cv_folds is not None
    if data.split == "image":
        log.warning(
            "image-level cross-validation: a subject's cells can land in different folds, so "
            "test scores are optimistic; use data.split = 'subject' when the data have subjects."
        )
    folded = manifest.assign(
        **{FOLD_COLUMN: assign_folds(manifest, data.cv_folds, data.split_seed, data.split)}
    )
    folds = {
        fold: fold_manifest(folded, fold, data.split, data.val_fraction, data.split_seed)
        for fold in range(data.cv_folds)
    }
    return folded.assign(split="train"), folds


def check_splits(manifest: pd.DataFrame, root: Path, *, need_test: bool = True) -> None:
    """Refuse a split manifest whose test (when `need_test`) or validation split is empty:
    every arm would train and then have nothing to be judged on (no comparisons, no report)."""
    counts = manifest["split"].value_counts()
    if need_test and not counts.get("test", 0):
        raise DataError(
            f"{root}: the test split is empty: no image is marked as test data, so no arm "
            "could be evaluated. Fix: add a `split` column (train or test, by subject) to the "
            "labels CSV, or set [data] test_fraction to hold out a share of the subjects for "
            "testing; a C-NMC folder needs its validation_data/ (test) folder."
        )
    if not counts.get("val", 0):
        raise DataError(
            f"{root}: the validation split is empty: too few training subjects to hold out. "
            "Fix: add training subjects, or raise [data] val_fraction."
        )


def stain_target(config: StudyConfig, manifest: pd.DataFrame) -> StainTarget | None:
    """The study's stain normalisation target: fitted to `normalize_reference`, else to the
    training split's images (never validation or test images; with cross-validation, whose
    folds share one cache, to images of every fold: the fit uses no labels); None when off."""
    method = config.data.normalize
    if method == "none":
        return None
    if config.data.normalize_reference:
        return reference_target(method, config.data.normalize_reference)
    train = manifest[manifest["split"] == "train"].sort_values("image_id")
    return training_target(method, list(train["path"]))


def _test_source(manifest: pd.DataFrame, test_fraction: float | None) -> str:
    """Where the test set comes from, in words, for dataset.json and the report."""
    if test_fraction is None:
        return "the data set's own test set"
    level = "subject-level" if has_subject_ids(manifest) else "image-level (no subject ids)"
    return f"held out: {test_fraction:g} of each class's subjects, {level}, fixed by split seed"


def split_counts(manifest: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """counts[split][class] = {"images": n, "subjects": n}, classes named ALL / HEM."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("train", "val", "test"):
        part = manifest[manifest["split"] == split]
        counts[split] = {
            CLASS_NAMES[label]: {
                "images": int((part["label"] == label).sum()),
                "subjects": int(part.loc[part["label"] == label, "subject"].nunique()),
            }
            for label in sorted(CLASS_NAMES, reverse=True)
        }
    return counts


def split_fingerprint(manifest: pd.DataFrame, folds: dict[int, pd.DataFrame] | None = None) -> str:
    """Identifies the exact images, labels and split assignment the arms were trained on
    (with cross-validation: every fold's split)."""
    frame = manifest[["image_id", "label", "split"]]
    for fold, split in sorted((folds or {}).items()):
        frame = frame.assign(**{f"split_f{fold}": split["split"]})
    text = frame.sort_values("image_id").to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- figures


def render_figures(
    data: PreparedData, augmentations: Sequence[AugmentationSpec], folder: StudyFolder
) -> None:
    """Figure 1 (ALL and HEM training cells, drawn like `leukaug data inspect`'s contact
    sheet) and Figure 2 (`augmentations`, the study's distinct augmentations, at p = 1;
    skipped when there are none). The study draws them after training, with the report
    (imported here: the drawing stack loads only when the report is rebuilt)."""
    from leukaug.augment.preview import render_preview
    from leukaug.data.inspect import contact_sheet

    cache = data.caches[max(data.caches)]
    by_class = _sample_training_cells(data.manifest, cache, per_class=SAMPLE_CELLS_PER_CLASS)
    stain = data.info.get("normalize")
    normalised = f", {stain['method'].capitalize()} stain-normalised" if stain else ""
    contact_sheet(
        [image for images in by_class.values() for image in images],
        [label for label, images in by_class.items() for _ in images],
        folder.sample_cells_figure,
        title=f"Figure 1: training cells, ALL (top) and HEM (bottom){normalised}",
        n_cols=SAMPLE_CELLS_PER_CLASS,
    )
    specs = list(dict.fromkeys(augmentations))
    if specs:
        n = PREVIEW_CELLS_PER_CLASS
        cells = np.concatenate([images[:n] for images in by_class.values()])
        labels = np.concatenate([[label] * len(images[:n]) for label, images in by_class.items()])
        render_preview(cells, labels, specs, folder.augmented_cells_figure)


def _sample_training_cells(
    manifest: pd.DataFrame, cache: ImageCache, per_class: int
) -> dict[int, np.ndarray]:
    """Up to `per_class` training images of ALL, then of HEM, from different subjects first."""
    train = manifest[manifest["split"] == "train"].sort_values("image_id")
    cells = {}
    for label in sorted(CLASS_NAMES, reverse=True):
        part = train[train["label"] == label]
        ranked = part.assign(rank=part.groupby("subject").cumcount()).sort_values(
            ["rank", "subject", "image_id"]
        )
        ids = list(ranked["image_id"][:per_class])
        cells[label] = np.asarray(cache.images[cache.rows(ids)]) if ids else np.zeros((0, 1, 1, 3))
    return cells
