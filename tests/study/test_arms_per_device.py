"""Several arms at once on one device (local executor, one process per arm) give the numbers
of one at a time; Ray's fractional `num_gpus` reaches its tasks."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from leukaug.core.errors import ConfigError
from leukaug.study import executors
from leukaug.study.run import run_study
from leukaug.study.study_file import parse_study, read_study_file
from study_fixtures import TINY_ARMS, write_tiny_study


def tiny_config(tmp_path: Path, **executor):
    study = write_tiny_study(tmp_path, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    raw = tomllib.loads(study.read_text())
    raw["executor"] |= executor
    return parse_study(raw, str(study))


@pytest.mark.slow
def test_two_arms_at_once_give_the_results_of_one_at_a_time(tmp_path: Path) -> None:
    one = run_study(tiny_config(tmp_path, threads=1), tmp_path / "one")
    done: list[str] = []
    two = run_study(
        tiny_config(tmp_path, threads=1, arms_per_device=2),
        tmp_path / "two",
        on_arm_done=lambda outcome: done.append(outcome.arm_id),
    )
    assert not one.failed and not two.failed
    assert sorted(done) == sorted(f"{name}-s0" for name in TINY_ARMS)
    # the fine-tuned arm starts from custom_cnn-none-full: it finishes after its source
    assert done.index("custom_cnn-flip-tune-s0") > done.index("custom_cnn-none-full-s0")
    for name in TINY_ARMS:
        a, b = (tmp_path / run / "arms" / f"{name}-s0" for run in ("one", "two"))
        assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes()
        assert json.loads((a / "metrics.json").read_text()) == json.loads(
            (b / "metrics.json").read_text()
        )
        history = ["epoch", "train_loss", "val_loss"]
        pd.testing.assert_frame_equal(
            pd.read_csv(a / "history.csv")[history], pd.read_csv(b / "history.csv")[history]
        )


def test_arms_per_device_defaults_by_device_and_is_validated(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    assert config.executor.arms_per_device is None
    assert executors.arms_per_device(config.executor, "cpu") == 1
    assert (
        executors.arms_per_device(config.executor, "cuda:0")
        == (executors.DEFAULT_ARMS_PER_DEVICE["cuda"])
    )
    assert executors.arms_per_device(tiny_config(tmp_path, arms_per_device=3).executor, "cpu") == 3
    with pytest.raises(ConfigError, match="arms_per_device"):
        tiny_config(tmp_path, arms_per_device=0)


def test_ray_takes_a_fraction_of_a_gpu_per_arm(tmp_path: Path, monkeypatch) -> None:
    config = tiny_config(tmp_path, kind="ray", num_gpus=0.25)
    assert config.executor.num_gpus == 0.25
    seen = {}

    def fake_run_ray(arms, job, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(executors, "run_ray", fake_run_ray)
    executors.run_arms("ray", [], None, caches={}, settings=config.executor)
    assert seen["num_gpus"] == 0.25
    assert tiny_config(tmp_path, num_gpus=2).executor.num_gpus == 2
    with pytest.raises(ConfigError, match="num_gpus"):
        tiny_config(tmp_path, num_gpus=1.5)


def test_the_study_file_and_the_command_line_set_it(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert read_study_file(study, ["arms_per_device=3"]).executor.arms_per_device == 3  # --set
    text = study.read_text().replace("[executor]\n", "[executor]\narms_per_device = 2\n")
    study.write_text(text)
    assert read_study_file(study).executor.arms_per_device == 2
