"""P(ALL) for new images from a trained arm (`leukaug.trained.loader`).

New images go through the same path as training: `open_rgb`, the cache's `preprocess` (stain normalisation, resize),
then `leukaug.arm.loop.evaluate` (uint8 -> [0, 1] -> (x - mean) / std -> model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from leukaug.arm.batches import SplitImages, make_pipeline, resolve_device
from leukaug.arm.loop import evaluate
from leukaug.core.errors import DataError
from leukaug.data.cache import preprocess
from leukaug.data.files import list_images, read_csv_table
from leukaug.data.images import is_image_file, open_rgb
from leukaug.data.stain_norm import StainTarget
from leukaug.stats.metrics import predicted_all
from leukaug.trained.loader import TrainedArm

OUTPUT_COLUMNS = ("path", "prob", "predicted")
CHUNK_IMAGES = 512  # images decoded per chunk: bounds memory on large folders


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
    stain = StainTarget.from_dict(card["stain"]) if card.get("stain") else None
    probs = []
    for start in range(0, len(paths), CHUNK_IMAGES):
        chunk = paths[start : start + CHUNK_IMAGES]
        store = np.stack([preprocess(open_rgb(p)[0], size, crop, stain, str(p)) for p in chunk])
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
