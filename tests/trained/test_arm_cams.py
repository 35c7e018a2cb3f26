"""The study's Grad-CAM figure (`cam_overlays.png`): readable captions, nothing drawn over
anything else."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.text import Text

from leukaug.report.cams import CAM_FIGURE_SCALE
from leukaug.trained.arm_cams import OVERLAY_COLUMNS, OVERLAY_DPI, overlay_figure

matplotlib.use("Agg")
MIN_CSS_PX = 11  # the smallest text the report shows


def test_overlay_labels_are_readable_and_never_overlap():
    rng = np.random.default_rng(0)
    groups = [(1, True), (1, False), (0, True), (0, False)]
    n = OVERLAY_COLUMNS
    table = pd.DataFrame(
        {
            "label": [label for label, _ in groups for _ in range(n)],
            "correct": [correct for _, correct in groups for _ in range(n)],
            "prob": rng.uniform(0, 1, 4 * n),
            "foreground_share": rng.uniform(0, 1, 4 * n),
        }
    ).iloc[: 4 * n - 2]  # the last group two short: its row has empty places
    table = table[~((table["label"] == 0) & table["correct"])]  # a group without cells
    images = rng.integers(0, 256, (len(table), 72, 72, 3), dtype=np.uint8)
    cams = rng.uniform(0, 1, (len(table), 72, 72)).astype(np.float32)
    fig = overlay_figure(table, images, cams)
    fig.set_dpi(OVERLAY_DPI)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) == len(table) + 4  # a caption per cell, a title per group
    for text in texts:
        css_px = text.get_fontsize() * OVERLAY_DPI / 72 * CAM_FIGURE_SCALE
        assert css_px >= MIN_CSS_PX, f"{text.get_text()!r}: {css_px:.1f} px on the page"
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    images_boxes = [ax.get_window_extent(renderer) for ax in fig.get_axes() if ax.images]
    overlaps = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
                if box_a.overlaps(box_b)]  # fmt: skip
    assert overlaps == []
    covered = [text for text, box in boxes if any(box.overlaps(image) for image in images_boxes)]
    assert covered == []  # no label drawn over a cell
