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
fill, cells, no_cell, auc_original, auc_replaced, drop (auc_original - auc_replaced), changed
(how far the fill moved the background pixels: mean absolute change in grey levels, 0-255).
A fill that changed them by less than `UNCHANGED_LEVELS` put back the colour the background
already had (black, on C-NMC's segmented cells, is both fills): its drop is about 0 by
construction and says nothing about the arm.
Fills of one colour (a black background's median is black) are predicted once, and a
process that checks the same test cells for another arm finds their cells once.
The cells as they are need not be predicted again: `original` takes the arm's recorded test
predictions (what its test AUC was computed from), so only the replaced cells are predicted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
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
COLUMNS = ["fill", "cells", "no_cell", "auc_original", "auc_replaced", "drop", "changed"]
# A fill that moved the background by less than this (mean grey levels, 0-255) replaced it
# with the colour it already had (black on C-NMC's segmented cells): its drop tests nothing.
UNCHANGED_LEVELS = 5.0

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


_last_found: dict[Hashable, list[_Chunk]] = {}  # the masks of the last images checked, by key


def _found_cells(images: np.ndarray, key: Hashable | None) -> list[_Chunk]:
    """`_find(images)`, kept for the next call with the same `key` (one entry: one test set)."""
    if key is None:
        return _find(images)
    if key not in _last_found:
        _last_found.clear()
        _last_found[key] = _find(images)
    return _last_found[key]


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
    original: Sequence[float] | None = None,
    images_key: Hashable | None = None,
) -> pd.DataFrame:
    """One row per fill (see the module doc): the test AUC of `predict` on the cells as
    they are and with their background replaced. `original`: P(ALL) of `images` as they
    are, already predicted by the same model (else `predict` computes it). `images_key`
    names these exact images (the arms of a study share their test cells): a process that
    checks the same images again reuses their cell masks."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise DataError(f"background check: {len(images)} images but {len(labels)} labels.")
    recorded = None if original is None else np.asarray(original, dtype=np.float64)
    if recorded is not None and len(recorded) != len(images):
        raise DataError(
            f"background check: {len(images)} images but {len(recorded)} recorded predictions."
        )
    chunks = _found_cells(images, images_key)
    colours = {
        fill: median_background(chunks) if fill == "median" else FILL_COLOURS[fill]
        for fill in fills
    }
    before_parts: list[np.ndarray] = []
    replaced: dict[str, list[np.ndarray]] = {fill: [] for fill in fills}
    change: dict[str, list[np.ndarray]] = {fill: [] for fill in fills}
    for chunk in chunks:
        if not chunk.found.any():
            continue
        rows = chunk.start + np.flatnonzero(chunk.found)
        cells, masks = np.asarray(images[rows]), chunk.masks()
        as_they_are = predict(cells) if recorded is None else recorded[rows]
        before_parts.append(np.asarray(as_they_are, dtype=np.float64))
        by_colour: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}  # once each
        for fill, colour in colours.items():
            if colour not in by_colour:
                changed = replace_background(cells, masks, colour)
                prob = np.asarray(predict(changed), dtype=np.float64)
                by_colour[colour] = (prob, background_change(cells, changed, masks))
            replaced[fill].append(by_colour[colour][0])
            change[fill].append(by_colour[colour][1])
    found = np.concatenate([chunk.found for chunk in chunks]) if chunks else np.zeros(0, bool)
    y = labels[found]
    before = _auc(y, np.concatenate(before_parts)) if before_parts else math.nan
    rows_out = []
    for fill in fills:
        after = _auc(y, np.concatenate(replaced[fill])) if replaced[fill] else math.nan
        n_found, n_missing = int(found.sum()), int((~found).sum())
        levels = float(np.concatenate(change[fill]).mean()) if change[fill] else math.nan
        rows_out.append([fill, n_found, n_missing, before, after, before - after, levels])
    return pd.DataFrame(rows_out, columns=COLUMNS)


def background_change(cells: np.ndarray, changed: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per cell: the mean absolute change of its background pixels (outside the mask), in
    grey levels 0-255 averaged over the channels; 0 where the background already was the fill."""
    outside = ~masks
    per_pixel = np.abs(changed.astype(np.int16) - cells.astype(np.int16)).mean(axis=3)
    return (per_pixel * outside).sum(axis=(1, 2)) / np.maximum(outside.sum(axis=(1, 2)), 1)


def changed_the_background(table: pd.DataFrame) -> pd.Series:
    """Per fill row: did the fill really change the background (`changed` at least
    `UNCHANGED_LEVELS`)? A table written before `changed` existed counts as tested."""
    if "changed" not in table.columns:
        return pd.Series(True, index=table.index)
    return ~(table["changed"] < UNCHANGED_LEVELS)


def depends_on_background(table: pd.DataFrame, threshold: float = BACKGROUND_DROP) -> bool:
    """True when replacing the background costs more than `threshold` AUC for any fill."""
    return bool((table["drop"] > threshold).any())
