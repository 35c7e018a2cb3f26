"""Use a trained arm: its model card, loading it back, and P(ALL) for new images.

A checkpoint is self-describing when `checkpoint.pt` holds a `"leukaug"` entry (the model
card: model, image size, crop, normalisation, head, operating threshold, version, spec).
Older arm folders have none; their card is rebuilt from `arm.json` and `predictions.csv`.
New images go through the same path as training: `open_rgb`, the cache's `prepare_image`,
then `leukaug.train.evaluate` (uint8 -> [0, 1] -> (x - mean) / std -> model).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from leukaug.arm import ArmSpec, build_model, load_arm_weights
from leukaug.batches import SplitImages, make_pipeline, resolve_device
from leukaug.data.cache import prepare_image
from leukaug.data.files import list_images, read_csv_table
from leukaug.data.images import is_image_file, open_rgb
from leukaug.errors import DataError
from leukaug.layout import ArmFolder, StudyFolder
from leukaug.metrics import predicted_all
from leukaug.model_card import MODEL_CARD_KEY, load_checkpoint, model_card
from leukaug.train import evaluate

OUTPUT_COLUMNS = ("path", "prob", "predicted")
CHUNK_IMAGES = 512  # images decoded per chunk: bounds memory on large folders


def read_arm_predictions(arm_dir: str | Path) -> pd.DataFrame:
    """An arm's `predictions.csv`, ids and subjects as text."""
    path = ArmFolder(Path(arm_dir)).predictions
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: the arm did not finish. Fix: rerun its study or `leukaug train`."
        )
    return pd.read_csv(path, dtype={"image_id": str, "subject": str})


def _study_crop(arm_dir: Path) -> float | None:
    """The data crop of the study holding `arm_dir` (`<study>/arms/<arm_id>/`), if it set one."""
    study_file = StudyFolder(arm_dir.parent.parent).study_toml
    if not study_file.is_file():
        return None
    crop = tomllib.loads(study_file.read_text(encoding="utf-8")).get("data", {}).get("crop")
    return float(crop) if crop is not None else None


def card_from_arm_json(arm_dir: str | Path) -> dict[str, Any]:
    """The model card of an arm folder written before checkpoints carried one."""
    arm_dir = Path(arm_dir)
    folder = ArmFolder(arm_dir)
    arm = folder.read_info()
    if not isinstance(arm, dict) or "spec" not in arm:
        raise DataError(
            f"{folder.arm_json} is missing or has no 'spec', and checkpoint.pt carries no "
            f"model card. Fix: pass an arm folder (arms/<arm_id>/) written by leukaug."
        )
    spec = _spec_from_dict(arm["spec"], folder.arm_json)
    return model_card(
        spec,
        read_arm_predictions(arm_dir),
        crop=_study_crop(arm_dir),
        arm_id=arm.get("arm_id"),
        name=arm.get("name"),
    )


def _spec_from_dict(data: dict[str, Any], where: Path) -> ArmSpec:
    """The arm's spec, or a DataError naming `where` when this version cannot read it."""
    try:
        return ArmSpec.from_dict(data)
    except (TypeError, KeyError) as error:
        raise DataError(
            f"{where}: the arm's spec does not fit this leukaug version ({error}). "
            "Fix: predict with the leukaug version that trained the arm (see its card or arm.json)."
        ) from None


@dataclass
class TrainedArm:
    """A trained arm ready for inference: the model (eval mode, CPU) and its card."""

    model: nn.Module
    card: dict[str, Any]
    card_source: str  # "checkpoint" or "arm.json"

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])


def load_trained_arm(arm_dir: str | Path) -> TrainedArm:
    """The arm's best checkpoint as a model, described by the checkpoint's card or `arm.json`."""
    arm_dir = Path(arm_dir)
    checkpoint = ArmFolder(arm_dir).checkpoint
    saved = load_checkpoint(checkpoint)
    if isinstance(saved.get(MODEL_CARD_KEY), dict):
        card, source = saved[MODEL_CARD_KEY], "checkpoint"
    else:
        card, source = card_from_arm_json(arm_dir), "arm.json"
    # Same module structure as in training (regime included); the weights come from the
    # checkpoint (a slim one's frozen part is rebuilt by load_arm_weights).
    spec = dataclasses.replace(
        _spec_from_dict(card["spec"], checkpoint),
        pretrained=False,
        weights_path=None,
        init_from=None,
    )
    model = build_model(spec, int(card["image_size"]))
    load_arm_weights(model, arm_dir)
    return TrainedArm(model.eval(), card, source)


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """Image paths from files, folders (recursive) and CSVs with a `path` column.

    Returns (images, ignored): `ignored` lists non-image files found in folders. CSV paths
    are relative to the CSV's folder unless absolute.
    """
    images: list[Path] = []
    ignored: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = list_images(item, ignored, recursive=True)
            if not found:
                raise DataError(
                    f"{item}: no image files in this folder (looked for .bmp, .png, .jpg, .tif)."
                )
            images.extend(found)
        elif item.suffix.lower() == ".csv":
            images.extend(_csv_images(item))
        elif item.is_file() and is_image_file(item):
            images.append(item)
        elif item.exists():
            raise DataError(
                f"{item}: not an image (.bmp, .png, .jpg, .tif), a folder or a CSV with a "
                "'path' column. Fix: pass images, folders of images or such a CSV."
            )
        else:
            raise DataError(f"{item}: no such file or folder. Fix: check the path.")
    if not images:
        raise DataError("no input images. Fix: pass image files, folders or a CSV of paths.")
    return images, ignored


def _csv_images(csv_path: Path) -> list[Path]:
    table = read_csv_table(csv_path, ["path"])
    paths = []
    for number, text in enumerate(table["path"], start=2):  # line 1 is the header
        path = Path(text.strip())
        path = path if path.is_absolute() else csv_path.parent / path
        if not path.is_file():
            raise DataError(
                f"{csv_path}, line {number}: image {text!r} does not exist (looked at {path}). "
                "Fix: paths are relative to the CSV's folder, or absolute."
            )
        paths.append(path)
    return paths


def predict_images(
    arm: TrainedArm,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    device: str = "cpu",
    tta: bool | None = None,
) -> pd.DataFrame:
    """`path, prob, predicted` per image, in input order; `tta` None = as the arm was evaluated."""
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}.")
    card = arm.card
    torch_device = resolve_device(device)
    model = arm.model.to(torch_device, memory_format=torch.channels_last)
    pipeline = make_pipeline(torch_device, card["mean"], card["std"])
    use_tta = bool(card.get("tta", False)) if tta is None else tta
    size, crop = int(card["image_size"]), card.get("crop")
    probs = []
    for start in range(0, len(paths), CHUNK_IMAGES):
        chunk = paths[start : start + CHUNK_IMAGES]
        store = np.stack([prepare_image(open_rgb(p)[0], size, crop) for p in chunk])
        data = SplitImages(store, np.arange(len(chunk)), np.zeros(len(chunk), dtype=np.int64))
        probs.append(evaluate(model, data, pipeline, batch_size=batch_size, tta=use_tta)["prob"])
    prob = np.concatenate(probs) if probs else np.zeros(0)
    return pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "prob": prob,
            "predicted": predicted_all(prob, arm.threshold).astype(np.int64),
        },
        columns=list(OUTPUT_COLUMNS),
    )
