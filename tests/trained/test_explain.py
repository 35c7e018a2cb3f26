"""Grad-CAM: a target layer per model family, CAM shapes, the foreground share on a planted
signal, and `leukaug explain` on a trained arm's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from leukaug.arm import checkpoints
from leukaug.arm.spec import ArmSpec
from leukaug.cli import app
from leukaug.core import atomic
from leukaug.core.errors import ConfigError, DataError
from leukaug.models import get_model, model_info
from leukaug.trained.explain import (
    CAM_COLUMNS,
    CAM_CSV,
    cam_layer,
    explain_images,
    foreground_share,
    grad_cams,
    normalise,
    target_layer,
)
from leukaug.trained.loader import load_trained_arm
from leukaug.trained.predict import OUTPUT_COLUMNS

SIZE = 64
FAMILIES = [
    ("custom_cnn", 72),
    ("custom_resnet", 72),
    pytest.param("resnet18", SIZE, marks=pytest.mark.slow),
    pytest.param("inception_v3", 75, marks=pytest.mark.slow),
    ("timm:resnet18", SIZE),
    pytest.param("timm:efficientnet_b0", SIZE, marks=pytest.mark.slow),
]


def cells(n: int, size: int) -> np.ndarray:
    """Bright discs (the cell) on black, the disc's centre moving from image to image."""
    rows, cols = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 3), np.uint8)
    for index in range(n):
        centre = size / 2 + 6 * (index - n / 2)
        images[index][(rows - centre) ** 2 + (cols - size / 2) ** 2 <= (size / 4) ** 2] = 200
    return images


@pytest.mark.parametrize(("name", "size"), FAMILIES)
def test_every_family_has_a_target_layer_and_full_size_cams(name, size):
    torch.manual_seed(0)
    model = get_model(name, image_size=size)
    assert isinstance(target_layer(model), nn.Module)
    info = model_info(name)
    cams, prob_all = grad_cams(model, normalise(cells(2, size), info.mean, info.std))
    assert cams.shape == (2, size, size) and prob_all.shape == (2,)
    assert cams.min() >= 0 and cams.max() <= 1 and np.isfinite(cams).all()


class PixelScorer(nn.Module):
    """A hand-set one-logit model: a 1x1 convolution scores each pixel, the mean is the logit."""

    def __init__(self, weight: float, bias: float) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, kernel_size=1)
        with torch.no_grad():
            self.features.weight.fill_(weight)
            self.features.bias.fill_(bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(1, 2, 3))


def test_foreground_share_follows_where_the_signal_is_planted():
    images = cells(4, SIZE)
    looks_at_cell = PixelScorer(weight=1.0, bias=0.0)  # evidence = brightness: the cell
    looks_at_black = PixelScorer(weight=-1.0, bias=3.0)  # evidence = darkness: the background
    for model, high in ((looks_at_cell, True), (looks_at_black, False)):
        result = explain_images(
            model, images, (0, 0, 0), (1, 1, 1), target="all", layer=model.features
        )
        assert result.cams.shape == (4, SIZE, SIZE)
        if high:
            assert (result.foreground_share > 0.99).all()
        else:
            assert (result.foreground_share < 0.01).all()


def test_foreground_share_arithmetic():
    cams = np.zeros((2, 4, 4), np.float32)
    cams[0, :2] = 1.0  # half the map's mass in the top half
    foreground = np.zeros((2, 4, 4), bool)
    foreground[:, 0] = True  # the first row
    np.testing.assert_allclose(foreground_share(cams, foreground), [0.5, np.nan])
    with pytest.raises(DataError, match="differ in shape"):
        foreground_share(cams, foreground[:, :2])


def test_unknown_family_and_bad_target():
    with pytest.raises(ConfigError, match="TARGET_LAYERS"):
        target_layer(nn.Linear(2, 1))
    with pytest.raises(ConfigError, match="predicted, all, hem"):
        grad_cams(get_model("custom_cnn", image_size=72), torch.zeros(1, 3, 72, 72), "both")


def test_explain_command_on_a_trained_arm(tmp_path):
    torch.manual_seed(0)
    arm_dir = tmp_path / "arms" / "custom_cnn-s0"
    spec = ArmSpec(model="custom_cnn", image_size=72, regime="freeze_first", freeze_first=19)
    model = get_model("custom_cnn", image_size=72)
    atomic.write_json(arm_dir / "arm.json", {"arm_id": "custom_cnn-s0", "spec": spec.to_dict()})
    checkpoints.torch_save(arm_dir / "checkpoint.pt", {"model": model.state_dict(), "epoch": 1})
    inputs = tmp_path / "cells"
    inputs.mkdir()
    for index, image in enumerate(cells(3, 90)):  # resized to the arm's 72 px on the way in
        Image.fromarray(image).save(inputs / f"cell{index}.png")
    out = tmp_path / "cams"
    result = CliRunner().invoke(app, ["explain", str(arm_dir), str(inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "wrote 3 overlays" in result.output
        and "layer layers." in result.output
        and "share of the CAM on the cell" in result.output
    )
    overlay = Image.open(out / "cell0_cam.png")
    assert overlay.size == (2 * 72, 72)  # the cell and its overlay side by side

    table = pd.read_csv(out / CAM_CSV)
    assert list(table.columns) == list(CAM_COLUMNS)
    assert list(table.columns[: len(OUTPUT_COLUMNS)]) == list(OUTPUT_COLUMNS)  # as predict's
    assert [Path(p).name for p in table["path"]] == ["cell0.png", "cell1.png", "cell2.png"]
    assert list(table["overlay"]) == ["cell0_cam.png", "cell1_cam.png", "cell2_cam.png"]
    threshold = load_trained_arm(arm_dir).threshold
    assert (table["threshold"] == threshold).all()
    assert (table["predicted"] == (table["prob"] >= threshold).astype(int)).all()
    assert table["prob"].between(0, 1).all() and table["foreground_share"].notna().all()
    missing = CliRunner().invoke(app, ["explain", str(tmp_path), str(inputs), "--out", str(out)])
    assert isinstance(missing.exception, DataError) and "arm.json" in str(missing.exception)


@pytest.mark.parametrize(
    ("name", "size"), [("resnet18", 48), ("custom_cnn", 72), ("custom_cnn", 256)]
)
def test_cams_at_every_size_are_finite_and_not_flat(name, size):
    """At 72 px the custom CNN's last convolution is 1 x 1 (a flat map, a NaN share): the
    default layer is `cam_layer`'s, the one the study's cam.csv uses, at every size."""
    torch.manual_seed(0)
    model = get_model(name, image_size=size)
    info = model_info(name)
    images = cells(3, size)
    result = explain_images(model, images, info.mean, info.std)
    assert np.isfinite(result.foreground_share).all()
    assert all(cam.max() > cam.min() for cam in result.cams)  # not a constant map
    layer = cam_layer(model, size)[1]
    again = explain_images(model, images, info.mean, info.std, layer=layer)
    np.testing.assert_allclose(again.cams, result.cams)  # the same layer as the study's


def test_explain_writes_predict_columns_on_a_single_image_and_says_1_overlay(tmp_path):
    torch.manual_seed(0)
    arm_dir = tmp_path / "arms" / "custom_cnn-s0"
    spec = ArmSpec(model="custom_cnn", image_size=72)
    atomic.write_json(arm_dir / "arm.json", {"arm_id": "custom_cnn-s0", "spec": spec.to_dict()})
    model = get_model("custom_cnn", image_size=72)
    checkpoints.torch_save(arm_dir / "checkpoint.pt", {"model": model.state_dict(), "epoch": 1})
    image = tmp_path / "one.png"
    Image.fromarray(cells(1, 72)[0]).save(image)
    result = CliRunner().invoke(app, ["explain", str(arm_dir), str(image), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrote 1 overlay " in result.output and "nan" not in result.output
