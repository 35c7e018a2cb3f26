"""Grad-CAM artefacts of a study's arm, written after the arm completed: `cam.csv`
(image_id, label, prob, correct, foreground_share, layer, cell_mask) on up to `CAM_CELLS`
test cells, 16 per (class, correct) group, and `cam_overlays.png`. `cell_mask` is "found", or
why no cell was found (`leukaug.data.cell_mask`); that cell's share is then NaN.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from leukaug.arm.bagged import MEMBERS_DIR, region_cache
from leukaug.arm.batches import resolve_device
from leukaug.arm.kinds import expand_regions
from leukaug.arm.spec import ArmSpec
from leukaug.core import atomic
from leukaug.core.layout import ArmFolder
from leukaug.data.cache import ImageCache
from leukaug.stats.metrics import predicted_all
from leukaug.trained.explain import TARGET_LAYERS, explain_images, overlay_png, target_layer
from leukaug.trained.loader import load_trained_arm

log = logging.getLogger(__name__)

CAM_CELLS = 64  # test cells explained per arm (a bounded, cheap sample)
CAM_GROUP_CELLS = CAM_CELLS // 4  # per (class, correct) group
# A CAM needs a map of some size: at small inputs (the custom CNN's last convolution is 1 x 1
# at 72 px) the deepest convolution whose output is at least this many pixels a side is used.
MIN_CAM_SIDE = 4
OVERLAY_COLUMNS = 6  # cells per group row in cam_overlays.png


def cam_cells(predictions: pd.DataFrame, per_group: int = CAM_GROUP_CELLS) -> pd.DataFrame:
    """Up to `per_group` test cells of each (class, correct) group, ALL first, by image_id."""
    test = predictions[predictions["split"] == "test"].sort_values("image_id")
    test = test.assign(correct=predicted_all(test["prob"].to_numpy()) == test["label"].to_numpy())
    groups = [
        test[(test["label"] == label) & (test["correct"] == correct)].head(per_group)
        for label in (1, 0)
        for correct in (True, False)
    ]
    return pd.concat(groups, ignore_index=True)


def cam_layer(model: nn.Module, image_size: int) -> tuple[str, nn.Module]:
    """(name, module) Grad-CAM weighs: the family's `target_layer`, unless its map is smaller
    than `MIN_CAM_SIDE` a side; then the module run last whose output map is not (a block
    or stage output, since a container's output is recorded after its children's)."""
    target = target_layer(model)
    names = {module: name for name, module in model.named_modules()}
    sides: list[tuple[nn.Module, int]] = []

    def record(module: nn.Module, _: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            sides.append((module, min(output.shape[-2:])))

    hooks = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=_device_of(model)))
    finally:
        for hook in hooks:
            hook.remove()
    if dict(sides).get(target, 0) < MIN_CAM_SIDE:
        large = [module for module, side in sides if side >= MIN_CAM_SIDE]
        target = large[-1] if large else target
    return names.get(target, type(target).__name__), target


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def write_cams(folder: ArmFolder, cache: ImageCache, device: str = "auto") -> pd.DataFrame | None:
    """Grad-CAM of a complete single-network arm on up to `CAM_CELLS` test cells: `cam.csv`
    (image_id, label, prob, correct, foreground_share, layer, cell_mask) and `cam_overlays.png`.
    None (and a log line) for a model family Grad-CAM cannot explain, or an arm without test
    cells."""
    trained = load_trained_arm(folder.path)
    if not any(isinstance(trained.model, family) for family in TARGET_LAYERS):
        log.warning("%s: no Grad-CAM layer for %s; no cam.csv", folder.path, trained.model_name)
        return None
    predictions = pd.read_csv(folder.predictions, dtype={"image_id": str, "subject": str})
    cells = cam_cells(predictions)
    if cells.empty:  # no test split (e.g. `leukaug train` on class folders): nothing to explain
        log.warning("%s: no test cells to explain; no cam.csv", folder.path)
        return None
    images = np.asarray(cache.images[cache.rows(list(cells["image_id"]))])
    model = trained.model.to(resolve_device(device))
    layer_name, layer = cam_layer(model, trained.image_size)
    explanation = explain_images(model, images, trained.mean, trained.std, layer=layer)
    table = cells[["image_id", "label", "prob", "correct"]].assign(
        foreground_share=explanation.foreground_share,
        layer=layer_name,
        cell_mask=list(explanation.cell_mask),
    )
    atomic.write_csv(folder.cam_csv, table)
    _save_overlays(folder.cam_overlays, table, images, explanation.cams)
    return table


def _save_overlays(path: Path, table: pd.DataFrame, images: np.ndarray, cams: np.ndarray) -> None:
    """One row per (class, correct) group of up to `OVERLAY_COLUMNS` cell | CAM pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(1, True), (1, False), (0, True), (0, False)]
    fig, axes = plt.subplots(
        len(groups), OVERLAY_COLUMNS, figsize=(1.9 * OVERLAY_COLUMNS, 1.1 * len(groups) + 0.4),
        squeeze=False,
    )  # fmt: skip
    for row, (label, correct) in enumerate(groups):
        indices = np.flatnonzero(
            (table["label"].to_numpy() == label) & (table["correct"].to_numpy() == correct)
        )[:OVERLAY_COLUMNS]
        title = f"{'ALL' if label else 'HEM'}, {'correct' if correct else 'wrong'}"
        axes[row, 0].set_title(title if len(indices) else f"{title}: none", fontsize=7, loc="left")
        for column, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if column < len(indices):
                index = indices[column]
                pair = Image.open(io.BytesIO(overlay_png(images[index], cams[index])))
                ax.imshow(np.asarray(pair))
                share = table["foreground_share"].iloc[index]
                where = "no cell found" if np.isnan(share) else f"on cell {share:.2f}"
                ax.text(0.5, -0.12, f"P(ALL) {table['prob'].iloc[index]:.2f}, {where}",
                        transform=ax.transAxes, ha="center", va="top", fontsize=5)  # fmt: skip
    fig.tight_layout()
    atomic.save_figure(path, fig, dpi=110)
    plt.close(fig)


def write_arm_cams(
    folder: ArmFolder, spec: ArmSpec, cache: ImageCache, device: str = "auto"
) -> None:
    """The Grad-CAM artefacts of a complete arm of any kind that trains networks: a single
    network's own; a bagged arm's `cam.csv` is its members' rows (each member explained on
    its region's cells). Nothing for a kind without a network."""
    if spec.kind == "single":
        write_cams(folder, cache, device)
        return
    if spec.kind != "bagged_regions":
        return
    tables = []
    for region in expand_regions(spec.regions):
        member = ArmFolder(folder.path / MEMBERS_DIR / region)
        if not member.cam_csv.is_file():
            write_cams(member, region_cache(cache, region), device)
        if member.cam_csv.is_file():
            tables.append(
                pd.read_csv(member.cam_csv, dtype={"image_id": str}).assign(member=region)
            )
    if tables:
        atomic.write_csv(folder.cam_csv, pd.concat(tables, ignore_index=True))
