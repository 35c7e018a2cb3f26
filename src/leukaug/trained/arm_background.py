"""The background check of a study's arm (`leukaug.arm.background_check`), written after the
arm completed, beside its Grad-CAMs: `background_check.csv` in the arm folder.

The cells as they are keep the arm's recorded test predictions (predictions.csv); only the
cells with their background replaced are predicted. A single-network arm predicts them by
its best checkpoint (as `leukaug predict` would, with test-time augmentation and evaluation
batch as the arm was evaluated); a `features` arm's classifier is refitted on the training
split (deterministic, so the same classifier). A bagged arm is not checked: its members see
region crops, not the background, and the perimeter member blacks it out.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from leukaug.arm.background_check import BACKGROUND_CHECK_CSV, Predictor, background_check
from leukaug.arm.batches import SplitImages, make_pipeline, resolve_device
from leukaug.arm.features_arm import fit_arm_classifier
from leukaug.arm.loop import eval_batch_size, evaluate
from leukaug.arm.spec import ArmSpec
from leukaug.core import atomic
from leukaug.core.layout import ArmFolder
from leukaug.data.cache import ImageCache
from leukaug.models.cell_features import cell_features, predict_probabilities
from leukaug.trained.loader import TrainedArm, load_trained_arm, read_arm_predictions

log = logging.getLogger(__name__)

CHECKED_KINDS = ("single", "features")


def network_predictor(arm: TrainedArm, batch_size: int, device: str = "auto") -> Predictor:
    """P(ALL) of uint8 cells from a trained network, as the arm's own evaluation computes it
    (`batch_size`: the arm's training batch; evaluated at the arm's evaluation batch)."""
    torch_device = resolve_device(device)
    model = arm.model.to(torch_device)
    pipeline = make_pipeline(torch_device, arm.card["mean"], arm.card["std"])
    tta = bool(arm.card.get("tta", False))
    eval_batch = eval_batch_size(batch_size, torch_device)

    def predict(images: np.ndarray) -> np.ndarray:
        data = SplitImages(images, np.arange(len(images)), np.zeros(len(images), np.int64))
        return np.asarray(evaluate(model, data, pipeline, batch_size=eval_batch, tta=tta)["prob"])

    return predict


def features_predictor(spec: ArmSpec, manifest: pd.DataFrame, cache: ImageCache) -> Predictor:
    """P(ALL) of uint8 cells from a `features` arm's classifier, refitted on its training split."""
    classifier, _ = fit_arm_classifier(spec, manifest, cache)
    return lambda images: predict_probabilities(classifier, cell_features(images))


def write_background_check(
    folder: ArmFolder,
    spec: ArmSpec,
    manifest: pd.DataFrame,
    cache: ImageCache,
    device: str = "auto",
) -> pd.DataFrame | None:
    """`background_check.csv` of a complete arm on its test cells; None (and a log line) for
    a kind that is not checked."""
    if spec.kind not in CHECKED_KINDS:
        log.info("%s: no background check for kind %r", folder.path, spec.kind)
        return None
    if spec.kind == "single":
        predict = network_predictor(load_trained_arm(folder.path), spec.batch_size, device)
    else:
        predict = features_predictor(spec, manifest, cache)
    predictions = read_arm_predictions(folder.path)
    test = predictions[predictions["split"] == "test"]
    rows = cache.rows(list(test["image_id"]))
    images = np.asarray(cache.images[rows])
    images_key = (str(cache.path), cache.fingerprint, hashlib.blake2b(rows.tobytes()).hexdigest())
    table = background_check(
        predict,
        images,
        test["label"].to_numpy(),
        original=test["prob"].to_numpy(),
        images_key=images_key,
    )
    atomic.write_csv(folder.path / BACKGROUND_CHECK_CSV, table)
    return table
