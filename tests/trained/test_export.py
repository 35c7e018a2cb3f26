"""`leukaug export`: torch.export (.pt2) and ONNX models that take images of any size and
return P(ALL), checked against PyTorch (.pt2 by torch.export.load, ONNX by onnxruntime)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_predict import own_images, train_tiny_arm
from typer.testing import CliRunner

from leukaug.cli import app
from leukaug.core.errors import ConfigError
from leukaug.data.cache import prepare_image
from leukaug.data.images import open_rgb
from leukaug.trained.export import (
    CHECK_SIDE,
    TOLERANCE,
    example_images,
    export_arm,
    probability_model,
)
from leukaug.trained.loader import load_trained_arm
from leukaug.trained.predict import predict_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cnmc):
    return train_tiny_arm(tiny_cnmc, tmp_path_factory.mktemp("export"))


def arm_images(trained) -> tuple[np.ndarray, np.ndarray]:
    """The arm's test images as (N, H, W, 3) uint8, prepared like the cache, and their P(ALL)."""
    arm_dir, manifest = trained
    paths, expected = own_images(arm_dir, manifest, "test")
    size = load_trained_arm(arm_dir).card["image_size"]
    return np.stack([prepare_image(open_rgb(p)[0], size) for p in paths]), expected


def test_the_wrapped_model_takes_uint8_and_float_images(trained):
    wrapped = probability_model(load_trained_arm(trained[0]))
    images, expected = arm_images(trained)
    with torch.no_grad():
        from_uint8 = wrapped(torch.from_numpy(images)).numpy()
        from_float = wrapped(torch.from_numpy(images).float() / 255.0).numpy()
    np.testing.assert_allclose(from_uint8, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(from_float, from_uint8, atol=1e-6, rtol=0)


def cnmc_sized(trained) -> tuple[np.ndarray, np.ndarray]:
    """Two of the arm's test cells at 450 px (the C-NMC size) and what `predict` gives them."""
    arm_dir, manifest = trained
    paths, _ = own_images(arm_dir, manifest, "test")
    images = np.stack([prepare_image(open_rgb(p)[0], CHECK_SIDE) for p in paths[:2]])
    files = []
    for index, image in enumerate(images):
        files.append(Path(arm_dir).parent / f"cell450-{index}.png")
        Image.fromarray(image).save(files[-1])
    return images, predict_images(load_trained_arm(arm_dir), files)["prob"].to_numpy()


def test_pt2_export_takes_any_batch_and_size_and_matches_pytorch(trained, tmp_path):
    out = tmp_path / "model.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation (or other) warning reaches the user
        result = export_arm(trained[0], out, fmt="pt2")
        loaded = torch.export.load(str(out)).module()
    assert result.max_abs_difference <= TOLERANCE
    images, expected = arm_images(trained)
    with torch.no_grad():
        from_uint8 = loaded(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(from_uint8, expected, atol=TOLERANCE, rtol=0)
    big, predicted = cnmc_sized(trained)
    wrapped = probability_model(load_trained_arm(trained[0]))
    with torch.no_grad():
        exported, reference = loaded(torch.from_numpy(big)).numpy(), wrapped(torch.from_numpy(big))
    assert exported.shape == (2,)
    np.testing.assert_allclose(exported, reference.numpy(), atol=TOLERANCE, rtol=0)
    # the in-graph resize is PIL's up to rounding of a few pixels by one level
    np.testing.assert_allclose(exported, predicted, atol=1e-2, rtol=0)
    wide = np.ascontiguousarray(big[:1, :, :300])  # not square: padded with its border colour
    path = Path(trained[0]).parent / "wide.png"
    Image.fromarray(wide[0]).save(path)
    with torch.no_grad():
        from_wide = loaded(torch.from_numpy(wide)).numpy()
    from_predict = predict_images(load_trained_arm(trained[0]), [path])["prob"].to_numpy()
    np.testing.assert_allclose(from_wide, from_predict, atol=1e-2, rtol=0)
    card = json.loads(result.card_path.read_text())
    assert card["input"]["size"].startswith("dynamic") and card["input"]["batch"] == "dynamic"
    assert card["threshold"] == load_trained_arm(trained[0]).threshold


def test_torchscript_was_dropped_with_a_note(trained, tmp_path):
    with pytest.raises(ConfigError, match="deprecates"):
        export_arm(trained[0], tmp_path / "model.pt", fmt="torchscript")
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("input_dtype", ["uint8", "float32"])
def test_onnx_export_matches_pytorch_in_onnxruntime(trained, tmp_path, input_dtype):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = export_arm(trained[0], out, fmt="onnx", input_dtype=input_dtype)
    assert result.max_abs_difference <= TOLERANCE
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images, expected = arm_images(trained)
    feed = images if input_dtype == "uint8" else images.astype(np.float32) / 255.0
    (prob,) = session.run(None, {"images": feed})
    assert prob.shape == (len(images),)  # the batch axis is dynamic
    np.testing.assert_allclose(prob, expected, atol=TOLERANCE, rtol=0)
    one = example_images(result.image_size, input_dtype, n=1).numpy()
    assert session.run(None, {"images": one})[0].shape == (1,)
    big, _ = cnmc_sized(trained)  # 450 px: the size is dynamic, the resize inside
    feed = big if input_dtype == "uint8" else big.astype(np.float32) / 255.0
    wrapped = probability_model(load_trained_arm(trained[0]))
    with torch.no_grad():
        reference = wrapped(torch.from_numpy(feed)).numpy()
    np.testing.assert_allclose(session.run(None, {"images": feed})[0], reference, atol=TOLERANCE)


def test_onnx_without_the_extra_names_it(trained, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec",
        lambda name: None if name == "onnxscript" else real_find_spec(name),
    )
    with pytest.raises(ConfigError, match=r"leukaug\[onnx\]"):
        export_arm(trained[0], tmp_path / "model.onnx", fmt="onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_unknown_format_and_dtype_are_config_errors(trained, tmp_path):
    with pytest.raises(ConfigError, match="pt2"):
        export_arm(trained[0], tmp_path / "m", fmt="pt3")
    with pytest.raises(ConfigError, match="uint8"):
        export_arm(trained[0], tmp_path / "m", fmt="pt2", input_dtype="float16")


def test_export_command(trained, tmp_path):
    out = tmp_path / "model.pt2"
    args = ["export", str(trained[0]), "--format", "pt2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "P(ALL)" in result.output and "any size" in result.output
    assert (tmp_path / "model.pt2.json").is_file()


def test_the_commands_choices_are_the_registered_formats_and_dtypes():
    from typing import get_args

    from leukaug.cli.predict_commands import ExportFormat, InputDtype
    from leukaug.trained.export import EXPORTERS, INPUT_DTYPES

    assert sorted(get_args(ExportFormat)) == EXPORTERS.names()
    assert sorted(get_args(InputDtype)) == sorted(INPUT_DTYPES)
