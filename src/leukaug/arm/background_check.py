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
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leukaug.core.errors import DataError
from leukaug.data.cell_mask import CellMasks, find_cells, replace_background

BACKGROUND_CHECK_CSV = "background_check.csv"
FILLS = ("median", "black")
FILL_COLOURS = {"black": (0, 0, 0)}  # the fixed fills; "median" is measured on the test cells
BACKGROUND_DROP = 0.05  # an AUC drop above this: the arm's predictions depend on the background
CHUNK_CELLS = 256  # cells masked and predicted at a time (bounds memory on large test sets)
COLUMNS = ["fill", "cells", "no_cell", "auc_original", "auc_replaced", "drop"]

Predictor = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) -> P(ALL) (N,)


def _auc(labels: np.ndarray, prob: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, prob))


def _chunks(images: np.ndarray) -> Iterator[tuple[np.ndarray, CellMasks]]:
    """(found cells, their masks) per chunk of `CHUNK_CELLS` images."""
    for start in range(0, len(images), CHUNK_CELLS):
        chunk = np.asarray(images[start : start + CHUNK_CELLS])
        yield chunk, find_cells(chunk)


def median_background(images: np.ndarray) -> tuple[int, int, int]:
    """The median over cells of each found cell's median background colour (black if none)."""
    medians = [
        np.median(image[~mask], axis=0)
        for chunk, cells in _chunks(images)
        for image, mask, found in zip(chunk, cells.masks, cells.found, strict=True)
        if found and (~mask).any()
    ]
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
    colours = {
        fill: median_background(images) if fill == "median" else FILL_COLOURS[fill]
        for fill in fills
    }
    kept: list[np.ndarray] = []
    original: list[np.ndarray] = []
    replaced: dict[str, list[np.ndarray]] = {fill: [] for fill in fills}
    for chunk, cells in _chunks(images):
        kept.append(cells.found)
        found, masks = chunk[cells.found], cells.masks[cells.found]
        if not len(found):
            continue
        original.append(np.asarray(predict(found), dtype=np.float64))
        for fill, colour in colours.items():
            changed = replace_background(found, masks, colour)
            replaced[fill].append(np.asarray(predict(changed), dtype=np.float64))
    found_all = np.concatenate(kept) if kept else np.zeros(0, bool)
    y = labels[found_all]
    before = _auc(y, np.concatenate(original)) if original else math.nan
    rows = []
    for fill in fills:
        after = _auc(y, np.concatenate(replaced[fill])) if replaced[fill] else math.nan
        n_found, n_missing = int(found_all.sum()), int((~found_all).sum())
        rows.append([fill, n_found, n_missing, before, after, before - after])
    return pd.DataFrame(rows, columns=COLUMNS)


def depends_on_background(table: pd.DataFrame, threshold: float = BACKGROUND_DROP) -> bool:
    """True when replacing the background costs more than `threshold` AUC for any fill."""
    return bool((table["drop"] > threshold).any())
