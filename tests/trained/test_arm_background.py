"""Shortcuts caught (issue 19): on a smear the CAM share follows the cell mask, and the
background check flags a model trained where the background colour encodes the label and
the cells are identical."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from leukaug.arm.background_check import (
    BACKGROUND_CHECK_CSV,
    BACKGROUND_DROP,
    COLUMNS,
    FILLS,
    UNCHANGED_LEVELS,
    background_check,
    changed_the_background,
    depends_on_background,
)
from leukaug.arm.context import ArmContext, RunSettings
from leukaug.arm.single import run_arm
from leukaug.arm.spec import ArmSpec
from leukaug.core.errors import DataError
from leukaug.core.layout import ArmFolder
from leukaug.data import load_or_build_cache, split_manifest
from leukaug.data.cell_mask import border_pixels
from leukaug.data.smear import on_smear
from leukaug.data.synth import sample_cells
from leukaug.trained.arm_background import write_background_check
from leukaug.trained.explain import explain_images

SIZE = 48
ALL_BACKGROUND = (236, 196, 210)  # pink smear: ALL
HEM_BACKGROUND = (244, 236, 240)  # paler smear: HEM (the shortcut: another lab's tint)


class BorderScorer:
    """A hand-set model that reads only the background: P(ALL) = how little green the
    image's frame holds (the ALL smear is pinker)."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.array([1.0 - np.median(border_pixels(image)[:, 1]) / 255.0 for image in images])


class CellScorer:
    """A hand-set model that reads only the cell: P(ALL) = the central pixel's blue share."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        centre = images[:, images.shape[1] // 2, images.shape[2] // 2].astype(np.float64)
        return centre[:, 2] / 255.0


@pytest.fixture(scope="module")
def shortcut_cells() -> tuple[np.ndarray, np.ndarray]:
    """Identical cells on backgrounds that encode the label: (images, labels)."""
    cell = sample_cells(1, SIZE, seed=2)[0][:1]
    labels = np.array([1, 0] * 8)
    images = np.concatenate(
        [on_smear(cell, seed=k, background=ALL_BACKGROUND if y else HEM_BACKGROUND)[0]
         for k, y in enumerate(labels)]
    )  # fmt: skip
    return images, labels


def test_the_check_flags_a_background_reader_and_passes_a_cell_reader(shortcut_cells):
    images, labels = shortcut_cells
    shortcut = background_check(BorderScorer(), images, labels)
    assert list(shortcut.columns) == COLUMNS and list(shortcut["fill"]) == list(FILLS)
    assert (shortcut["cells"] == len(images)).all() and (shortcut["no_cell"] == 0).all()
    assert (shortcut["auc_original"] == 1.0).all()
    assert (shortcut["auc_replaced"] < 0.75).all() and depends_on_background(shortcut)
    assert changed_the_background(shortcut).all()  # the smear was really replaced
    honest = background_check(CellScorer(), images, labels)
    assert (honest["drop"].abs() < 1e-9).all() and not depends_on_background(honest)
    assert BACKGROUND_DROP == 0.05
    with pytest.raises(DataError, match="16 images but 3 labels"):
        background_check(CellScorer(), images, labels[:3])


class CountingScorer(CellScorer):
    """CellScorer that counts the cells it was asked to predict."""

    def __init__(self) -> None:
        self.cells = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.cells += len(images)
        return super().__call__(images)


def test_recorded_predictions_stand_for_the_cells_as_they_are(shortcut_cells):
    """With the arm's recorded predictions the check predicts only the replaced cells (one
    pass per fill), and its AUC before replacement is the recorded one."""
    images, labels = shortcut_cells
    recorded = BorderScorer()(images)  # another model's record: auc_original must follow it
    scorer = CountingScorer()
    table = background_check(scorer, images, labels, original=recorded)
    assert scorer.cells == len(FILLS) * len(images)
    assert (table["auc_original"] == 1.0).all()  # the BorderScorer's AUC, not the cell reader's
    recomputed = background_check(CountingScorer(), images, labels)
    assert np.allclose(table["auc_replaced"], recomputed["auc_replaced"])
    with pytest.raises(DataError, match="16 images but 15 recorded predictions"):
        background_check(scorer, images, labels, original=recorded[:15])


def test_fills_of_one_colour_are_predicted_once():
    """On C-NMC's black background the median fill is black too: one pass serves both."""
    images, labels = sample_cells(8, SIZE, seed=3)
    scorer = CountingScorer()
    table = background_check(scorer, images, labels, original=np.zeros(len(images)))
    found = int(table["cells"].iloc[0])
    assert found > 0 and scorer.cells == found  # one pass, not one per fill
    assert table["auc_replaced"].nunique() == 1
    assert not changed_the_background(table).any()  # black for black: nothing was tested
    assert (table["changed"] < UNCHANGED_LEVELS).all()


def test_cells_are_found_once_per_test_set_and_again_for_another(shortcut_cells, monkeypatch):
    """The arms of a study share their test cells: a worker finds them once, by key."""
    import leukaug.arm.background_check as check

    images, labels = shortcut_cells
    calls = []
    find = check._find
    monkeypatch.setattr(check, "_find", lambda batch: calls.append(len(batch)) or find(batch))
    first = background_check(CellScorer(), images, labels, images_key=("test", 1))
    again = background_check(CellScorer(), images, labels, images_key=("test", 1))
    assert calls == [len(images)] and first.equals(again)
    background_check(CellScorer(), images[:8], labels[:8], images_key=("test", 2))
    background_check(CellScorer(), images[:8], labels[:8])  # no key: found afresh
    assert calls == [len(images), 8, 8]


def test_a_cam_on_the_smear_gives_a_low_share_and_on_the_cell_a_high_one(shortcut_cells):
    import torch
    from torch import nn

    class Scorer(nn.Module):
        def __init__(self, weight: tuple[float, float, float]) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 1, kernel_size=1)
            with torch.no_grad():
                self.features.weight.copy_(torch.tensor(weight).view(1, 3, 1, 1))
                self.features.bias.zero_()

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.features(images).mean(dim=(1, 2, 3))

    images = shortcut_cells[0][:4]
    # red minus blue: high on the pink smear and red cells, negative on the blue-purple cell
    on_background = Scorer((1.0, 0.0, -1.0))
    on_cell = Scorer((-1.0, 0.0, 1.0))
    low = explain_images(on_background, images, (0, 0, 0), (1, 1, 1), target="all",
                         layer=on_background.features)  # fmt: skip
    high = explain_images(on_cell, images, (0, 0, 0), (1, 1, 1), target="all",
                          layer=on_cell.features)  # fmt: skip
    assert set(low.cell_mask) == {"found"}
    assert (low.foreground_share < 0.2).all() and (high.foreground_share > 0.8).all()


def test_a_network_trained_on_the_background_is_flagged(shortcut_cells, tiny_manifest, tmp_path):
    """A small CNN trained on identical cells whose background tint is the label."""
    cell = sample_cells(1, SIZE, seed=2)[0][:1]  # the same cell in every image
    (tmp_path / "data").mkdir()
    rows = []
    for index, row in enumerate(tiny_manifest.itertuples(index=False)):
        colour = ALL_BACKGROUND if row.label == 1 else HEM_BACKGROUND
        path = tmp_path / "data" / f"{index}.png"
        Image.fromarray(on_smear(cell, seed=index, background=colour)[0][0]).save(path)
        rows.append(row._replace(path=str(path)))
    manifest = split_manifest(pd.DataFrame(rows), "subject", val_fraction=0.3, seed=0)
    cache = load_or_build_cache(manifest, SIZE, tmp_path / "cache")
    spec = ArmSpec(model="timm:resnet10t", image_size=SIZE, epochs=3, batch_size=8, lr=1e-3)
    folder = ArmFolder(tmp_path / "arms" / "shortcut-s0")
    run_arm(spec, manifest, cache, ArmContext(folder.path, "shortcut-s0", "shortcut", RunSettings(device="cpu")))  # fmt: skip
    table = write_background_check(folder, spec, manifest, cache, device="cpu")
    assert table is not None and (folder.path / BACKGROUND_CHECK_CSV).is_file()
    assert pd.read_csv(folder.path / BACKGROUND_CHECK_CSV).shape == (2, len(COLUMNS))
    assert (table["auc_original"] > 0.9).all()  # it learned the background
    test = pd.read_csv(folder.predictions).query("split == 'test'")
    assert (table["no_cell"] == 0).all()  # every cell found: the AUC before is the recorded one
    assert np.allclose(table["auc_original"], roc_auc_score(test["label"], test["prob"]))
    assert (table["auc_replaced"] < 0.65).all()  # identical cells on one colour: ~no signal
    assert depends_on_background(table) and (table["drop"] > BACKGROUND_DROP).all()
