"""`--version` without importing torch; `leukaug version` with the GPUs torch sees.
(That starting the command line imports no torch is tested in tests/test_architecture.py.)"""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from leukaug.cli import app, torch_build


def test_torchs_version_is_read_from_its_version_file():
    assert torch_build() == (torch.__version__, torch.version.cuda)


def test_version_flag_and_command():
    flag = CliRunner().invoke(app, ["--version"])
    command = CliRunner().invoke(app, ["version"])
    assert flag.exit_code == command.exit_code == 0
    cuda = torch.version.cuda or "none (CPU build)"
    assert f"torch {torch.__version__} (CUDA {cuda}; GPUs: see leukaug version)" in flag.output
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert f"; {gpus} GPU(s) available)" in command.output
    assert flag.output.replace("GPUs: see leukaug version", "") == command.output.replace(
        f"{gpus} GPU(s) available", ""
    )
