"""The study's preflight (issue 22 item 5): everything that can be checked before any data
are read or written is checked then, and every problem is listed at once (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tomli_w

from cli_tools import attack_study, output, run_cli, squeeze
from leukaug.core.errors import ConfigError
from leukaug.study import preflight as preflight_module
from leukaug.study.plan import expand_arms
from leukaug.study.preflight import checkpoint_bytes, preflight
from leukaug.study.study_file import read_study_file


@pytest.fixture
def no_imagenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty torch hub cache, and no downloads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("LEUKAUG_OFFLINE", "1")


def unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/sys/leukaug-cache")  # root writes anywhere else
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "cache"


def bad_study(tmp_path: Path) -> Path:
    study = tmp_path / "bad.toml"
    study.write_text(tomli_w.dumps({
        "study": {"name": "bad", "device": "cuda:7"},
        "data": {"source": str(tmp_path / "no-such-data"),
                 "cache_dir": str(unwritable_folder(tmp_path))},
        "training": {"image_size": 72, "epochs": 1},
        "models": {"resnet18": {"pretrained": True},
                   "custom_cnn": {"weights_path": str(tmp_path / "missing.pt")}},
    }))  # fmt: skip
    return study


def test_every_problem_is_listed_at_once_before_anything_is_read(
    tmp_path: Path, no_imagenet: None
) -> None:
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None and _cuda_count() >= 8:
        pytest.skip("this machine has a cuda:7")
    config = read_study_file(bad_study(tmp_path))
    out = tmp_path / "out"
    arms = expand_arms(config, out / "arms")
    with pytest.raises(ConfigError) as error:
        preflight(config, arms, out)
    message = str(error.value)
    assert "the study cannot run: 5 problem(s)" in message
    for expected in (
        "data.cache_dir",  # not writable
        "'cuda:7'",  # the device
        f"data.source {tmp_path / 'no-such-data'} does not exist",
        f"weights_path {tmp_path / 'missing.pt'} does not exist",
        "ImageNet weights for resnet18",  # not cached, offline
    ):
        assert expected in message, expected
    assert not out.exists()


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_a_study_needing_more_disk_than_is_free_stops_before_its_data(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight_module, "free_bytes", lambda folder: 1000)
    config = read_study_file(attack_study(tmp_path, attack_data))
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"has 1000 B free; .* need about .* \(estimated\)"):
        preflight(config, expand_arms(config, out / "arms"), out)


def test_the_checkpoint_estimate_follows_the_parameter_count(tmp_path: Path, attack_data) -> None:
    from leukaug.models.factory import model_parameter_count

    config = read_study_file(attack_study(tmp_path, attack_data))
    arms = expand_arms(config, tmp_path / "arms")
    parameters = model_parameter_count("custom_cnn", "linear", 72)
    assert checkpoint_bytes(arms, tmp_path / "arms") == (16 + 12) * parameters
    clean = checkpoint_bytes(arms, tmp_path / "arms")
    assert 1e6 < clean < 50e6  # a 692k-parameter CNN: about 19 MB


def test_missing_weights_stop_leukaug_run_with_exit_2_before_the_data(
    tmp_path: Path, attack_data: Path, no_imagenet: None, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 22 item 5: a missing weights_path and missing ImageNet weights were found when
    each arm started, after the data were prepared; the study exited 1 ("3 arm(s) failed")."""
    extra = (
        f"\n[models.resnet18]\npretrained = true\n[models.resnet50]\nweights_path = "
        f'"{tmp_path / "gone.pt"}"\n'
    )
    study = attack_study(tmp_path, attack_data, extra=extra)
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 2
    _, err = output(capsys)
    assert "2problem(s)" in err and "ImageNetweightsforresnet18" in err
    assert squeeze(f"weights_path {tmp_path / 'gone.pt'} does not exist") in err
    assert "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not (out / "arms").exists()
