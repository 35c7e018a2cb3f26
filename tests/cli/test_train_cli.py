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
