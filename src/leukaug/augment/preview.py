"""The augmentation preview grid (the seed paper's Figure 2): a few cells per class, each
shown as is and under every augmentation. Used by `leukaug augment preview` and the report."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from leukaug import CLASS_NAMES
from leukaug.augment import AugmentationSpec, build_augmenter
from leukaug.core.atomic import save_figure
from leukaug.core.errors import ConfigError
from leukaug.data.cache import load_or_build_cache
from leukaug.data.read import read_dataset


def _as_float_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1] -> float (N, 3, H, W)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ConfigError(f"Preview images must be (N, H, W, 3), got {images.shape}.")
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return batch.float() / 255.0 if images.dtype == np.uint8 else batch.float()
    return images.float()


def augment_columns(
    images: np.ndarray | torch.Tensor, specs: Sequence[AugmentationSpec], seed: int = 0
) -> list[tuple[str, torch.Tensor]]:
    """('original', images) then (name, images under that augmentation alone at p = 1)."""
    batch = _as_float_batch(images)
    columns = [("original", batch)]
    for index, spec in enumerate(specs):
        generator = torch.Generator().manual_seed(seed + index)
        augmented = build_augmenter([spec], p=1.0)(batch, generator)
        settings = ", ".join(f"{key}={value}" for key, value in spec.params.items())
        columns.append((f"{spec.name}\n{settings}" if settings else spec.name, augmented))
    return columns


def render_preview(
    images: np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray,
    specs: Sequence[AugmentationSpec],
    path: str | os.PathLike[str],
    seed: int = 0,
) -> Path:
    """Write a PNG (or any matplotlib format, by suffix) grid: one row per cell, one column
    per augmentation (first column: the original), rows labelled with the class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [int(label) for label in labels]
    if len(labels) != len(images) or not labels:
        raise ConfigError(
            f"Need one label per image and at least one image, got {len(labels)} labels for {len(images)} images."
        )
    columns = augment_columns(images, specs, seed)
    n_rows, n_cols = len(labels), len(columns)
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.3 * n_cols, 1.35 * n_rows + 0.4), squeeze=False
    )
    for col, (title, batch) in enumerate(columns):
        pixels = batch.clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for row in range(n_rows):
            axis = axes[row][col]
            axis.imshow(pixels[row], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=8)
            if col == 0:
                axis.set_ylabel(CLASS_NAMES.get(labels[row], str(labels[row])), fontsize=8)
    figure.tight_layout(pad=0.3)
    path = Path(path)
    save_figure(path, figure, dpi=110)
    plt.close(figure)
    return path


def cells_from_dataset(
    root: str | os.PathLike[str], n_per_class: int, size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`n_per_class` random cells per class of a data set on disk, decoded and resized as
    for training: (uint8 (N, size, size, 3), labels), HEM first."""
    manifest = read_dataset(root).manifest
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(manifest["label"].unique()):
        rows = manifest[manifest["label"] == label]
        picks = rng.choice(len(rows), size=min(n_per_class, len(rows)), replace=False)
        chosen.append(rows.iloc[np.sort(picks)])
    subset = pd.concat(chosen).sort_values("image_id").reset_index(drop=True)
    with tempfile.TemporaryDirectory(prefix="leukaug-preview-") as cache_dir:
        cache = load_or_build_cache(subset, size, cache_dir)
        ids = subset.sort_values(["label", "image_id"])["image_id"].tolist()
        images = np.array(cache.images[cache.rows(ids)])
    labels = subset.set_index("image_id").loc[ids, "label"].to_numpy()
    return images, labels
