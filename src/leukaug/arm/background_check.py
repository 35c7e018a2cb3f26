"""The counterfactual background check: does an arm's answer depend on the background?

Every test cell is predicted twice more, with everything outside its cell mask
(`leukaug.data.cell_mask`) replaced by one colour for all cells: the median background
colour of the test cells ("median": a plausible, neutral background, with no red cells, no
texture and no per-image tint; the median over cells of each cell's background median) and
black ("black", C-NMC's segmented look). An arm that reads the cell keeps its test AUC; an
arm whose AUC drops by more than `BACKGROUND_DROP` was using the background (a shortcut:
the smear, the red cells, a scanner's or a lab's tint), whatever its CAM shows.

Cells where no cell is found are left out of both AUCs (`no_cell` counts them): their
background cannot be told from the cell. `background_check.csv` has one row per fill:
fill, cells, no_cell, auc_original, auc_replaced, drop (auc_original - auc_replaced).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leukaug.core.errors import DataError
from leukaug.core.layout import ArmFolder
from leukaug.data.cell_mask import find_cells, replace_background

BACKGROUND_CHECK_CSV = ArmFolder(Path()).background_check_csv.name  # core.layout owns it
FILLS = ("median", "black")
FILL_COLOURS = {"black": (0, 0, 0)}  # the fixed fills; "median" is measured on the test cells
BACKGROUND_DROP = 0.05  # an AUC drop above this: the arm's predictions depend on the background
CHUNK_CELLS = 256  # cells masked and predicted at a time (bounds memory on large test sets)
# Each cell's mask is found once and kept packed (1 bit a pixel) between the two passes:
# the median background colour over all cells, then the predictions.
COLUMNS = ["fill", "cells", "no_cell", "auc_original", "auc_replaced", "drop"]

Predictor = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) -> P(ALL) (N,)


def _auc(labels: np.ndarray, prob: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, prob))


@dataclass(frozen=True)
class _Chunk:
    """One chunk's cells as found once: where (start), which were found, their packed masks
    and each found cell's median background colour."""

    start: int
    found: np.ndarray
    packed: np.ndarray
    shape: tuple[int, int, int]
    medians: list[np.ndarray]

    def masks(self) -> np.ndarray:
        count = int(np.prod(self.shape))
        return np.unpackbits(self.packed, count=count).reshape(self.shape).astype(bool)


def _find(images: np.ndarray) -> list[_Chunk]:
    """The cell masks of every image, `CHUNK_CELLS` at a time, kept packed (1 bit a pixel)."""
    chunks = []
    for start in range(0, len(images), CHUNK_CELLS):
        chunk = np.asarray(images[start : start + CHUNK_CELLS])
        cells = find_cells(chunk)
        masks = cells.masks[cells.found]
        medians = [
            np.median(image[~mask], axis=0)
            for image, mask in zip(chunk[cells.found], masks, strict=True)
            if (~mask).any()
        ]
        chunks.append(_Chunk(start, cells.found, np.packbits(masks), masks.shape, medians))
    return chunks


def median_background(chunks: Sequence[_Chunk]) -> tuple[int, int, int]:
    """The median over cells of each found cell's median background colour (black if none)."""
    medians = [median for chunk in chunks for median in chunk.medians]
    if not medians:
        return (0, 0, 0)
    colour = np.round(np.median(np.stack(medians), axis=0)).astype(int)
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def background_check(
    predict: Predictor,
    images: np.ndarray,
    labels: Sequence[int],
    fills: Sequence[str] = FILLS,
) -> pd.DataFrame:
    """One row per fill (see the module doc): the test AUC of `predict` on the cells as
    they are and with their background replaced."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise DataError(f"background check: {len(images)} images but {len(labels)} labels.")
    chunks = _find(images)
    colours = {
        fill: median_background(chunks) if fill == "median" else FILL_COLOURS[fill]
        for fill in fills
    }
    original: list[np.ndarray] = []
    replaced: dict[str, list[np.ndarray]] = {fill: [] for fill in fills}
    for chunk in chunks:
        if not chunk.found.any():
            continue
        rows = chunk.start + np.flatnonzero(chunk.found)
        cells, masks = np.asarray(images[rows]), chunk.masks()
        original.append(np.asarray(predict(cells), dtype=np.float64))
        for fill, colour in colours.items():
            changed = replace_background(cells, masks, colour)
            replaced[fill].append(np.asarray(predict(changed), dtype=np.float64))
    found = np.concatenate([chunk.found for chunk in chunks]) if chunks else np.zeros(0, bool)
    y = labels[found]
    before = _auc(y, np.concatenate(original)) if original else math.nan
    rows_out = []
    for fill in fills:
        after = _auc(y, np.concatenate(replaced[fill])) if replaced[fill] else math.nan
        n_found, n_missing = int(found.sum()), int((~found).sum())
        rows_out.append([fill, n_found, n_missing, before, after, before - after])
    return pd.DataFrame(rows_out, columns=COLUMNS)


def depends_on_background(table: pd.DataFrame, threshold: float = BACKGROUND_DROP) -> bool:
    """True when replacing the background costs more than `threshold` AUC for any fill."""
    return bool((table["drop"] > threshold).any())
