"""`leukaug export`: TorchScript and ONNX models that take images and return P(ALL),
checked against PyTorch (TorchScript by torch.jit.load, ONNX by onnxruntime)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from test_predict import own_images, train_tiny_arm
from typer.testing import CliRunner

from leukaug.cli import app
from leukaug.core.errors import ConfigError
from leukaug.data.cache import prepare_image
from leukaug.data.images import open_rgb
from leukaug.trained.export import TOLERANCE, example_images, export_arm, probability_model
from leukaug.trained.loader import load_trained_arm


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


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_matches_pytorch(trained, tmp_path):
    out = tmp_path / "model.pt"
    result = export_arm(trained[0], out, fmt="torchscript")
    assert result.max_abs_difference <= TOLERANCE
    loaded = torch.jit.load(str(out))
    images, expected = arm_images(trained)
    with torch.no_grad():
        from_uint8 = loaded(torch.from_numpy(images)).numpy()
        from_float = loaded(torch.from_numpy(images).float() / 255.0).numpy()
    np.testing.assert_allclose(from_uint8, expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(from_float, expected, atol=TOLERANCE, rtol=0)


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
    with pytest.raises(ConfigError, match="torchscript"):
        export_arm(trained[0], tmp_path / "m", fmt="torchscrpt")
    with pytest.raises(ConfigError, match="uint8"):
        export_arm(trained[0], tmp_path / "m", fmt="torchscript", input_dtype="float16")


def test_export_command(trained, tmp_path):
    out = tmp_path / "model.pt"
    args = ["export", str(trained[0]), "--format", "torchscript", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "P(ALL)" in result.output


def test_the_commands_choices_are_the_registered_formats_and_dtypes():
    from typing import get_args

    from leukaug.cli.predict_commands import ExportFormat, InputDtype
    from leukaug.trained.export import EXPORTERS, INPUT_DTYPES

    assert sorted(get_args(ExportFormat)) == EXPORTERS.names()
    assert sorted(get_args(InputDtype)) == sorted(INPUT_DTYPES)
