"""`leukaug models`, `augmentations`, `augment preview`, `weights fetch` (nothing downloads)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from typer.testing import CliRunner

from leukaug.augment import list_augmentations
from leukaug.cli import app
from leukaug.core.errors import ConfigError, WeightsError
from leukaug.models import list_models

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_models_lists_every_model_with_size_and_parameters():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in list_models():
        assert name in result.output
    assert "16,421,185" in result.output and "299" in result.output and "0.485" in result.output


def test_augmentations_lists_every_augmentation_with_defaults():
    result = runner.invoke(app, ["augmentations"])
    assert result.exit_code == 0, result.output
    for name in list_augmentations():
        assert name in result.output
    assert '"degrees": 180.0' in result.output


def test_augment_preview_with_synthetic_cells(tmp_path):
    out = tmp_path / "fig2.png"
    args = ["augment", "preview", "--out", str(out), "--size", "32", "--n-per-class", "1"]
    result = runner.invoke(app, [*args, "--aug", "flip,stain:strength=strong"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "2 cells x 3 columns" in result.output


def test_augment_preview_with_data(tmp_path):
    from leukaug.data.synth import SynthConfig, generate

    root = tmp_path / "data"
    tiny = SynthConfig(
        size=32, subjects_per_class=2, test_subjects_per_class=1, cells_per_subject=2
    )
    generate(root, tiny)
    out = tmp_path / "fig2.png"
    args = ["augment", "preview", "--data", str(root), "--out", str(out), "--size", "24"]
    result = runner.invoke(app, [*args, "--aug", "noise,rotate"])
    assert result.exit_code == 0, result.output
    assert "4 cells x 3 columns" in result.output
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_augment_preview_unknown_augmentation(tmp_path):
    result = runner.invoke(
        app, ["augment", "preview", "--out", str(tmp_path / "x.png"), "--aug", "flipp"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "Did you mean 'flip'" in str(result.exception)


def test_weights_fetch_offline_fails_clearly(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    result = runner.invoke(app, ["weights", "fetch", "resnet18", "--dest", str(tmp_path)])
    assert isinstance(result.exception, WeightsError)
    message = str(result.exception)
    assert "resnet18-f37072fd.pth" in message and "internet access" in message
    assert not list(tmp_path.iterdir())


def test_weights_fetch_unknown_model(tmp_path):
    result = runner.invoke(app, ["weights", "fetch", "custom_cnn", "--dest", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)


@pytest.mark.parametrize(
    "command", [["models"], ["augmentations"], ["augment", "--help"], ["weights", "--help"]]
)
def test_commands_have_help(command):
    assert (
        runner.invoke(app, [*command, "--help"] if command[-1] != "--help" else command).exit_code
        == 0
    )
