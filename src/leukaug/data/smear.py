"""Cells on a blood-smear background: leukaug's cells (on black) painted onto a pale pink
smear with red cells, the kind of image a lab's raw single-cell crops look like. For tests
and benchmarks of everything that must find the cell on any background (`cell_mask`).

A red cell is a disc of eosin-like pink with a paler centre (its biconcave shape); the
background is a pale pink with a little noise; the white cell (the non-black pixels of the
input) is painted on top. `background` can be any colour, so a test can make it carry the
label (a shortcut a model can learn while the cells stay identical).
"""

from __future__ import annotations

import numpy as np

from leukaug.data.cell_mask import BLACK_THRESHOLD

SMEAR_PINK = (232, 206, 214)  # the smear's pale background
RED_CELL = (214, 132, 150)  # eosin-like red-cell pink
RED_CELL_CENTRE = (226, 170, 182)  # the paler biconcave centre
RED_CELLS = 10  # red cells per image
RED_CELL_RADIUS = 0.11  # as a share of the image side
NOISE_SIGMA = 3.0


def smear_background(
    rng: np.random.Generator,
    shape: tuple[int, int],
    background: tuple[int, int, int] = SMEAR_PINK,
    red_cells: int = RED_CELLS,
) -> np.ndarray:
    """uint8 (H, W, 3) of `shape` (H, W): a `background` colour with `red_cells` red-cell discs."""
    height, width = shape
    image = np.empty((height, width, 3), np.float32)
    image[:] = background
    rows, cols = np.mgrid[:height, :width]
    for _ in range(red_cells):
        radius = min(height, width) * RED_CELL_RADIUS * rng.uniform(0.85, 1.15)
        row, col = rng.uniform(0, height), rng.uniform(0, width)
        distance = np.hypot(rows - row, cols - col)
        image[distance <= radius] = RED_CELL
        image[distance <= 0.45 * radius] = RED_CELL_CENTRE
    image += rng.normal(0.0, NOISE_SIGMA, image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def on_smear(
    cells: np.ndarray,
    seed: int = 0,
    background: tuple[int, int, int] = SMEAR_PINK,
    red_cells: int = RED_CELLS,
) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks): uint8 cells on black (N, H, W, 3) painted onto smear backgrounds
    (one per cell, seeded), and the true cell masks (the cells' non-black pixels)."""
    cells = np.asarray(cells, dtype=np.uint8)
    masks = cells.max(axis=-1) > BLACK_THRESHOLD
    rng = np.random.default_rng(seed)
    out = cells.copy()
    for index in range(len(cells)):
        out[index] = smear_background(rng, cells.shape[1:3], background, red_cells)
    out[masks] = cells[masks]
    return out, masks
