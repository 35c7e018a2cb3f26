"""The `features` arm kind: no CNN. Morphology, colour and GLCM texture features of the
cached uint8 cells (`leukaug.models.cell_features`) and a class-balanced gradient-boosted
classifier fitted on the training split. It is not early-stopped on the validation split
(scikit-learn's "auto" rule holds out 10% of the training cells only above 10,000 of them);
the validation split is predicted like any arm's, for the threshold the report chooses
there. With augmentations, the training set is every cell plus one augmented copy of it
(the arm's augmenter, seeded by the arm's seed), so "does augmentation help" has an
answer here too. CNN settings (epochs, optimiser, regime, init_from) do not apply and are
refused where they would be silently ignored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from leukaug.arm.batches import AUGMENT_STREAM, stream_seed
from leukaug.arm.callbacks import HISTORY_COLUMNS
from leukaug.arm.context import ArmContext
from leukaug.arm.kinds import check_spec
from leukaug.arm.lifecycle import (
    PREDICTION_SPLITS,
    ArmResult,
    finish_arm,
    prediction_frame,
    start_arm,
)
from leukaug.arm.spec import ArmSpec
from leukaug.augment import build_augmenter
from leukaug.core.errors import ConfigError
from leukaug.core.layout import ArmFolder
from leukaug.data.cache import ImageCache
from leukaug.models.cell_features import (
    cell_features,
    fit_feature_classifier,
    predict_probabilities,
)


def _split_cells(split_manifest: pd.DataFrame, cache: ImageCache, split: str) -> np.ndarray:
    part = split_manifest[split_manifest["split"] == split]
    return np.asarray(cache.images[cache.rows(list(part["image_id"]))])


def augmented_copies(spec: ArmSpec, images: np.ndarray) -> np.ndarray:
    """One copy of every cell through the arm's augmenter, seeded by the arm's seed."""
    augmenter = build_augmenter(
        list(spec.augmentations), p=spec.aug_p, mode=spec.aug_mode, image_size=images.shape[1]
    )
    generator = torch.Generator().manual_seed(stream_seed(spec.seed, 0, AUGMENT_STREAM))
    copies = []
    for start in range(0, len(images), spec.batch_size):
        batch = torch.from_numpy(images[start : start + spec.batch_size]).permute(0, 3, 1, 2)
        out = augmenter(batch.float() / 255.0, generator)
        copies.append((out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(copies) if copies else images[:0]


def fit_arm_classifier(
    spec: ArmSpec, split_manifest: pd.DataFrame, cache: ImageCache
) -> tuple[HistGradientBoostingClassifier, int]:
    """(classifier, training cells): the arm's classifier fitted on the training split (plus
    one augmented copy of every cell with augmentations). Deterministic: the same spec, split
    and cache give the same classifier (the background check refits it this way)."""
    train = split_manifest[split_manifest["split"] == "train"]
    images = _split_cells(split_manifest, cache, "train")
    labels = train["label"].to_numpy(dtype=np.int64)
    if spec.augmentations:
        images = np.concatenate([images, augmented_copies(spec, images)])
        labels = np.concatenate([labels, labels])
    return fit_feature_classifier(cell_features(images), labels, seed=spec.seed), len(labels)


def run_features(
    spec: ArmSpec, split_manifest: pd.DataFrame, cache: ImageCache, context: ArmContext
) -> ArmResult:
    """Cell features and a gradient-boosted classifier (see the module doc); of the context
    only the folder and names apply: scikit-learn on the CPU, no epochs, no checkpoint."""
    folder = ArmFolder(context.out_dir)
    arm_id = context.arm_id
    check_spec(spec)
    if cache.size != spec.image_size:
        raise ConfigError(
            f"the cache holds {cache.size} px images but arm {arm_id!r} needs {spec.image_size} px."
        )
    arm_json, done = start_arm(spec, folder, arm_id, context.name, device="cpu")
    if done is not None:
        return done
    classifier, training_cells = fit_arm_classifier(spec, split_manifest, cache)
    frames = []
    for split in PREDICTION_SPLITS:
        frame = prediction_frame(split_manifest, split)
        cells = _split_cells(split_manifest, cache, split)
        prob = predict_probabilities(classifier, cell_features(cells)) if len(cells) else []
        frames.append(frame.assign(prob=np.asarray(prob, dtype=np.float64)))
    extra = {"classifier": {"name": type(classifier).__name__, "n_iter": int(classifier.n_iter_),
             "training_cells": training_cells}}  # fmt: skip
    predictions = pd.concat(frames, ignore_index=True)
    return finish_arm(folder, arm_json, predictions, pd.DataFrame(columns=HISTORY_COLUMNS), extra)
