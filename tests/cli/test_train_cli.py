"""`leukaug train`: one arm from the command line, on the tiny synthetic C-NMC tree."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
from typer.testing import CliRunner

from leukaug.cli import app


def test_train_command_writes_an_arm_folder(tiny_cnmc, tmp_path):
    out = tmp_path / "arm"
    args = ["train", "--data", str(tiny_cnmc), "--model", "custom_cnn", "--image-size", "72",
            "--aug", "flip,rotate:degrees=90", "--epochs", "1", "--batch-size", "8", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--seed", "3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    arm = json.loads((out / "arm.json").read_text())
    assert arm["status"] == "complete" and arm["seed"] == 3
    assert arm["spec"]["augmentations"][1] == {"name": "rotate", "params": {"degrees": 90}}
    assert len(pd.read_csv(out / "history.csv")) == 1
    assert set(pd.read_csv(out / "predictions.csv")["split"]) == {"val", "test"}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already complete" in " ".join(again.output.split())


def test_train_command_reports_user_errors_with_exit_status_2(tiny_cnmc, tmp_path):
    command = [sys.executable, "-m", "leukaug", "train", "--data", str(tiny_cnmc), "--model", "custom_cnm",
               "--out", str(tmp_path / "arm"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "custom_cnn" in completed.stderr  # "did you mean 'custom_cnn'?"


def test_bad_train_options_are_named_by_flag_not_as_a_study_file(tiny_cnmc, tmp_path):
    args = [
        "train",
        "--data",
        str(tiny_cnmc),
        "--model",
        "custom_cnn",
        "--out",
        str(tmp_path / "a"),
    ]
    result = CliRunner().invoke(app, [*args, "--lr", "-1", "--val-fraction", "3"])
    assert result.exit_code != 0 and not (tmp_path / "a").exists()
    message = str(result.exception)
    assert "invalid study file" not in message and "leukaug train: invalid option" in message
    assert "--lr: Input should be greater than 0" in message
    assert "--val-fraction: Input should be less than 1" in message
    message = str(CliRunner().invoke(app, [*args, "--image-size", "48"]).exception)
    assert "--image-size = 48 is too small" in message and "invalid study file" not in message


def test_train_options_are_set_overrides(tiny_cnmc, tmp_path):
    from leukaug.cli.train_commands import TRAIN_FLAGS, train_config

    values = {"data": tiny_cnmc, "model": "custom_cnn", "aug": "flip", "regime": "full",
              "seed": 3, "epochs": 2, "lr": 0.01, "image_size": None, "device": "cpu"}  # fmt: skip
    values = {name: values.get(name) for name in TRAIN_FLAGS} | values
    values |= {"aug_p": 0.5, "freeze_first": 0}
    config = train_config(values, "arm", ["training.amsgrad=true", "training.epochs=4"])
    assert config.study.seeds == [3] and config.study.device == "cpu"
    assert config.training.lr == 0.01 and config.training.amsgrad is True
    assert config.training.epochs == 4  # --set comes after the options it overrides
    assert list(config.augmentations) == ["flip"] and list(config.models) == ["custom_cnn"]


def test_train_runs_through_the_study_job_and_prints_auc_and_threshold(tiny_cnmc, tmp_path):
    out = tmp_path / "arm"
    args = ["train", "--data", str(tiny_cnmc), "--model", "custom_cnn", "--image-size", "72",
            "--epochs", "1", "--batch-size", "8", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "test (n = " in text and "AUC" in text and "balanced accuracy" in text
    assert "operating threshold" in text
    assert (out / "cam.csv").is_file()  # Grad-CAM, as a study's arm
    arm = json.loads((out / "arm.json").read_text())
    assert arm["execution"]["threads"] >= 1 and arm["arm_id"] == "arm"
