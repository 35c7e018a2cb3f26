"""Helpers for tests that go through the real `leukaug` entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from leukaug.cli import main


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Exit status of `leukaug ARGS` through the real entry point."""
    monkeypatch.setattr(sys, "argv", ["leukaug", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


ATTACK_SYNTH = {"size": 72, "subjects_per_class": 3, "test_subjects_per_class": 2,
                "cells_per_subject": 2}  # fmt: skip


def attack_study(
    folder: Path,
    data_dir: Path,
    *,
    cache_dir: Path | None = None,
    device: str = "cpu",
    description: str = "",
    extra: str = "",
    name: str = "attack.toml",
) -> Path:
    """A one-arm study (custom CNN, 72 px, 1 epoch) on the embedded data in `data_dir`."""
    import tomli_w

    table = {
        "study": {"name": "attack", "description": description, "device": device},
        "data": {"dir": str(data_dir), "cache_dir": str(cache_dir or folder / "cache"),
                 "synth": ATTACK_SYNTH},
        "training": {"image_size": 72, "epochs": 1, "batch_size": 16},
        "models": {"custom_cnn": {}},
        "executor": {"threads": 1},
    }  # fmt: skip
    path = folder / name
    path.write_text(tomli_w.dumps(table) + extra, encoding="utf-8")
    return path


def output(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(stdout, stderr) with the console's line wrapping undone (all whitespace removed)."""
    captured = capsys.readouterr()
    return "".join(captured.out.split()), "".join(captured.err.split())


def squeeze(text: str | Path) -> str:
    return "".join(str(text).split())


def train_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """`leukaug train` of resnet18 at 32 px for one epoch (seconds on a CPU)."""
    return ["train", "--data", str(data), "--model", "resnet18", "--image-size", "32",
            "--epochs", "1", "--batch-size", "8", "--out", str(out), "--cache-dir", str(cache),
            "--device", "cpu", *extra]  # fmt: skip
