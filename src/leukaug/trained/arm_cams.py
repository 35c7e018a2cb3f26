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
from PIL import Image

from leukaug.arm.bagged import MEMBERS_DIR, region_cache
from leukaug.arm.batches import resolve_device
from leukaug.arm.kinds import expand_regions
from leukaug.arm.spec import ArmSpec
from leukaug.core import atomic
from leukaug.core.layout import ArmFolder
from leukaug.data.cache import ImageCache
from leukaug.stats.metrics import predicted_all
from leukaug.trained.explain import TARGET_LAYERS, cam_layer, explain_images, overlay_png
from leukaug.trained.loader import load_trained_arm

log = logging.getLogger(__name__)

CAM_CELLS = 64  # test cells explained per arm (a bounded, cheap sample)
CAM_GROUP_CELLS = CAM_CELLS // 4  # per (class, correct) group
OVERLAY_COLUMNS = 6  # cells per group row in cam_overlays.png
OVERLAY_DPI = 110
# Points; the report shows the PNG at 0.75 CSS px per pixel (report.cams.CAM_FIGURE_SCALE):
# 10 pt at 110 dpi is 15 PNG px, 11.5 CSS px on the page.
OVERLAY_CAPTION_PT = 10
OVERLAY_TITLE_PT = 11


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
    import matplotlib.pyplot as plt

    fig = overlay_figure(table, images, cams)
    atomic.save_figure(path, fig, dpi=OVERLAY_DPI)
    plt.close(fig)


def overlay_figure(table: pd.DataFrame, images: np.ndarray, cams: np.ndarray) -> Any:
    """One row per (class, correct) group of up to `OVERLAY_COLUMNS` cell | CAM pairs, each
    with its P(ALL) and share on the cell under it; the group's name heads its row. Laid out
    by matplotlib's constrained layout (titles and captions never overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(1, True), (1, False), (0, True), (0, False)]
    members = [
        np.flatnonzero(
            (table["label"].to_numpy() == label) & (table["correct"].to_numpy() == correct)
        )[:OVERLAY_COLUMNS]
        for label, correct in groups
    ]
    heights = [1.75 if len(indices) else 0.35 for indices in members]  # an empty group: a line
    fig = plt.figure(figsize=(2.0 * OVERLAY_COLUMNS, sum(heights)), layout="constrained")
    subfigs = fig.subfigures(len(groups), 1, height_ratios=heights)
    for subfig, (label, correct), indices in zip(subfigs, groups, members, strict=True):
        title = f"{'ALL' if label else 'HEM'} cells, {'correct' if correct else 'wrong'}"
        subfig.suptitle(
            title if len(indices) else f"{title}: none",
            x=0.0,
            ha="left",
            fontsize=OVERLAY_TITLE_PT,
            fontweight="bold",
        )
        if not len(indices):
            continue
        for column, ax in enumerate(subfig.subplots(1, OVERLAY_COLUMNS, squeeze=False)[0]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if column < len(indices):
                index = indices[column]
                pair = Image.open(io.BytesIO(overlay_png(images[index], cams[index])))
                ax.imshow(np.asarray(pair))
                share = table["foreground_share"].iloc[index]
                ax.set_xlabel(
                    f"P(ALL) {table['prob'].iloc[index]:.2f}\n"
                    + ("no cell found" if np.isnan(share) else f"on cell {share:.2f}"),
                    fontsize=OVERLAY_CAPTION_PT,
                    linespacing=1.1,
                )
    return fig


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
