"""The cell found on any background (issue 19): on black, on a smear with red cells, and
a clear 'not found' (never 'everything is cell') when there is no plausible cell."""

from __future__ import annotations

import numpy as np
import pytest

from leukaug.core.errors import DataError
from leukaug.data.cell_mask import BLACK, MAX_CELL_SHARE, STAINED, find_cells, replace_background
from leukaug.data.regions import foreground_share
from leukaug.data.smear import SMEAR_PINK, on_smear
from leukaug.data.synth import sample_cells

SIZE = 64


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def synthetic_cells() -> np.ndarray:
    return sample_cells(4, SIZE, seed=1)[0]  # 4 ALL then 4 HEM cells on black


def test_on_black_the_cell_is_the_non_black_region(synthetic_cells):
    found = find_cells(synthetic_cells)
    assert found.found.all() and set(found.backgrounds) == {BLACK}
    assert np.array_equal(found.masks, synthetic_cells.max(axis=-1) > 10)


def test_on_a_smear_the_mask_is_the_white_cell_not_the_red_cells(synthetic_cells):
    images, truth = on_smear(synthetic_cells, seed=3)
    found = find_cells(images)
    assert found.found.all() and set(found.backgrounds) == {STAINED}
    for mask, cell in zip(found.masks, truth, strict=True):
        assert iou(mask, cell) > 0.8  # the whole cell, cytoplasm included, not the nucleus only
        assert mask.mean() < 0.7  # not "everything is cell"


def test_no_plausible_cell_is_said_not_defaulted_to_everything():
    pink = np.empty((1, SIZE, SIZE, 3), np.uint8)
    pink[:] = SMEAR_PINK  # a smear with no cell at all
    black = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    purple = np.empty((1, SIZE, SIZE, 3), np.uint8)
    purple[:] = (90, 60, 140)  # stained all over: no distinct cell
    purple[0, :, : SIZE // 20] = SMEAR_PINK
    found = find_cells(np.concatenate([pink, black, purple]))
    assert not found.found.any() and not found.masks.any()
    assert "no haematoxylin-stained region" in found.reasons[0]
    assert "no non-black region on a black background" in found.reasons[1]
    assert f"more than {MAX_CELL_SHARE:.0%}" in found.reasons[2]
    assert "no cell found in 3 of 3" in found.not_found_summary()
    cams = np.ones((3, SIZE, SIZE), np.float32)
    assert np.isnan(foreground_share(cams, found.masks)).all()  # no cell: no share, not 1.0


def test_background_replacement_keeps_the_cell(synthetic_cells):
    images, truth = on_smear(synthetic_cells[:2], seed=0, red_cells=0)
    for fill, colour in (("black", (0, 0, 0)), ("median", SMEAR_PINK), ((1, 2, 3), (1, 2, 3))):
        out = replace_background(images, truth, fill)
        assert np.array_equal(out[truth], images[truth])
        np.testing.assert_allclose(out[~truth].mean(axis=0), colour, atol=2)
    with pytest.raises(DataError, match="do not match"):
        replace_background(images, truth[:, :3], "black")
    with pytest.raises(DataError, match="uint8"):
        find_cells(np.zeros((2, 8, 8), np.uint8))
