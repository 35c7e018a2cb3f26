"""`leukaug synth` and `leukaug data inspect` through the real command-line entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leukaug.cli import app, main

runner = CliRunner()


def _run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["leukaug", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


@pytest.mark.parametrize("command", [["synth"], ["data"], ["data", "inspect"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_synth_writes_the_layout(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    args = ["synth", "--out", str(out), "--size", "24", "--subjects-per-class", "2"]
    args += ["--test-subjects-per-class", "1", "--cells-per-subject", "2", "--seed", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    assert (out / "SYNTHETIC_DATA.txt").is_file()
    assert len(list((out / "training_data").rglob("*.bmp"))) == len(
        list((out / "training_data").rglob("UID_*"))
    )
    assert (out / "validation_data" / "C-NMC_test_prelim_phase_data" / "1.bmp").is_file()


def test_inspect_prints_counts_and_writes_contact_sheet(tiny_cnmc: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "inspect", str(tiny_cnmc), "--out", str(tmp_path), "--per-class", "3"]
    )
    assert result.exit_code == 0, result.output
    for text in ("cnmc_kaggle", "SYNTHETIC", "ALL", "HEM", "40x40", "RGB", "Per subject"):
        assert text in result.output
    sheet = tmp_path / "sample_cells.png"
    assert sheet.is_file() and sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_data_exits_with_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "empty").mkdir()
    assert _run_main(monkeypatch, "data", "inspect", str(tmp_path / "empty")) == 2
    error = capsys.readouterr().err
    assert "cannot tell the layout" in error and "Traceback" not in error


def test_bad_synth_option_exits_with_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    assert _run_main(monkeypatch, "synth", "--out", str(tmp_path / "x"), "--difficulty", "2") == 2
    assert "--difficulty" in capsys.readouterr().err


def test_inspect_summarises_many_subjects_unless_all(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    root = tmp_path / "cells"
    for name, count in (("all", 15), ("hem", 9)):  # no subject ids: 24 one-image subjects
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((12, 16, 3), 40 * i % 255, np.uint8)).save(
                root / name / f"c{i}.tif"
            )
    result = runner.invoke(app, ["data", "inspect", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())
    assert "Persubject" not in text and "24subjects:--alllistseveryone." in text
    assert "Imagespersubject(subjectsperclass)" in text
    assert "│1│15│9│" in text  # the histogram: every subject has one image
    listed = runner.invoke(app, ["data", "inspect", str(root), "--all", "--out", str(tmp_path)])
    assert listed.exit_code == 0 and "Per subject" in listed.output
    assert "all/c14.tif" in "".join(listed.output.split())
