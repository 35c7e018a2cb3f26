"""Attacks on leukaug through the command line and the study file,
as a hostile or careless user would make them (issue 13).

Every test here is one attack, named after it, on tiny data; each must end in a
`LeukaugError` naming the culprit (exit status 2 through the CLI), never a traceback,
a silent acceptance or a hang. The fixtures at the top build the attack material and are
meant to be reused by new tests.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cli_tools import attack_study, output, run_cli, squeeze, train_args


def test_markup_in_a_study_key_is_printed_as_it_is(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = attack_study(tmp_path, attack_data)
    study.write_text(study.read_text().replace("[training]", '[training]\n"[/x]" = 1'))
    assert run_cli(monkeypatch, "run", str(study), "--out", str(tmp_path / "out")) == 2
    _, err = output(capsys)
    assert "Unknownkey'[/x]'" in err and "Traceback" not in err


def test_markup_in_a_data_label_is_printed_as_it_is(
    class_folders: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    image = next((class_folders / "all").iterdir()).relative_to(class_folders).as_posix()
    (class_folders / "labels.csv").write_text(f"path,label\n{image},[/x]\n")
    status = run_cli(
        monkeypatch, "data", "inspect", str(class_folders), "--labels-csv", "labels.csv"
    )
    _, err = output(capsys)
    assert status == 2 and "label'[/x]'isnot0or1" in err


def test_brackets_in_a_folder_name_survive_in_output_and_errors(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = tmp_path / "cnmc [copy]"
    shutil.copytree(tiny_cnmc, root)
    assert run_cli(monkeypatch, "data", "inspect", str(root), "--out", str(tmp_path / "sheet")) == 0
    out, _ = output(capsys)
    assert squeeze(root) in out
    assert run_cli(monkeypatch, "data", "inspect", str(root / "[red]nope")) == 2
    _, err = output(capsys)
    assert squeeze(root / "[red]nope") in err


@pytest.mark.slow  # trains an arm or more
def test_train_into_a_folder_with_brackets(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "arm [copy] [/x]"
    status = run_cli(monkeypatch, "train", "--data", str(tiny_cnmc), "--model", "resnet18",
                     "--image-size", "32", "--epochs", "1", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu")  # fmt: skip
    stdout, err = output(capsys)
    assert status == 0, err
    assert f"resultsin{squeeze(out)}" in stdout + err


def test_out_is_a_file(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = attack_study(tmp_path, attack_data)
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    for target in (out, out / "study"):
        assert run_cli(monkeypatch, "run", str(study), "--out", str(target)) == 2
        _, err = output(capsys)
        assert f"{squeeze(out)}isafile" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # checked before any cache was built


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (for root, who writes anywhere else: /sys)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_out_is_not_writable(
    tmp_path: Path, attack_data: Path, unwritable: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = attack_study(tmp_path, attack_data)
    for target in (unwritable, unwritable / "leukaug-attack" / "out"):
        assert run_cli(monkeypatch, "run", str(study), "--out", str(target)) == 2
        _, err = output(capsys)
        assert f"--out{squeeze(target)}isnotwritable" in err
    assert not (tmp_path / "cache").exists()


def test_study_file_not_in_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    study = tmp_path / "latin1.toml"
    study.write_bytes('[study]\ndescription = "Leucémie"\n[models.custom_cnn]\n'.encode("latin-1"))
    assert run_cli(monkeypatch, "run", str(study), "--out", str(tmp_path / "out")) == 2
    _, err = output(capsys)
    assert squeeze(study) in err and "notUTF-8" in err and "line2" in err
    assert not (tmp_path / "out").exists()


def test_train_out_is_a_file(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "arm.txt"
    out.write_text("")
    status = run_cli(monkeypatch, "train", "--data", str(tiny_cnmc), "--model", "resnet18",
                     "--image-size", "32", "--out", str(out), "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    _, err = output(capsys)
    assert status == 2 and f"{squeeze(out)}isafile" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_an_absent_accelerator_is_refused_before_running(
    device: str, tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    study = attack_study(tmp_path, attack_data, device=device)
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 2
    _, err = output(capsys)
    assert f"study.device='{device}',butthismachinehasno" in err
    assert not (tmp_path / "cache").exists() and not (out / "arms").exists()
    assert run_cli(monkeypatch, "run", str(attack_study(tmp_path, attack_data)), "--out", str(out),
                   "--device", device) == 2  # fmt: skip
    status = run_cli(monkeypatch, "train", "--data", str(attack_data), "--model", "custom_cnn",
                     "--image-size", "72", "--device", device, "--out", str(tmp_path / "arm"),
                     "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert status == 2 and not (tmp_path / "arm").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_no_report_path_is_printed_when_no_report_was_written(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import leukaug.arm.dispatch

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the accelerator vanished")

    monkeypatch.setattr(leukaug.arm.dispatch, "run_any_arm", broken)
    out = tmp_path / "out"
    assert (
        run_cli(monkeypatch, "run", str(attack_study(tmp_path, attack_data)), "--out", str(out))
        == 1
    )
    stdout, _ = output(capsys)
    assert "Report:" not in stdout and "nostudyreport" in stdout.replace(
        "noreport", "nostudyreport"
    )
    assert not (out / "report.html").exists()


@pytest.mark.slow  # trains an arm or more
def test_train_writes_nothing_until_valid_and_takes_force(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out, cache = tmp_path / "arm", tmp_path / "cache"
    bad = train_args(
        tiny_cnmc, out, cache, "--pretrained", "--weights-path", str(tmp_path / "no.pt")
    )
    assert run_cli(monkeypatch, *bad) == 2
    assert not out.exists()  # no arm.json saying "running" to block the corrected command
    too_small = train_args(tiny_cnmc, out, cache, "--image-size", "16")  # the last one counts
    assert run_cli(monkeypatch, *too_small) == 2 and not out.exists()
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, out, cache)) == 0
    first = json.loads((out / "arm.json").read_text())
    capsys.readouterr()
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, out, cache, "--lr", "0.001")) == 2
    _, err = output(capsys)
    assert "--force" in err
    assert json.loads((out / "arm.json").read_text()) == first
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, out, cache, "--lr", "0.001", "--force")) == 0
    second = json.loads((out / "arm.json").read_text())
    assert second["status"] == "complete" and second["spec"]["lr"] == 0.001
    assert second["config_hash"] != first["config_hash"]


@pytest.mark.slow  # trains an arm or more
def test_train_takes_positive_class_and_labels_csv(
    class_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = ("--split", "image", "--val-fraction", "0.34")
    out = tmp_path / "by_folder"
    assert run_cli(monkeypatch, *train_args(class_folders, out, tmp_path / "cache", "--positive-class",
                                            "all", *split)) == 0  # fmt: skip
    labels = pd.read_csv(out / "predictions.csv")
    assert set(labels["label"]) == {0, 1} and set(labels["split"]) == {"val"}
    rows = [f"{p.relative_to(class_folders).as_posix()},{int(p.parent.name == 'all')}"
            for p in sorted(class_folders.glob("*/*.bmp"))]  # fmt: skip
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "by_csv"
    assert run_cli(monkeypatch, *train_args(class_folders, out, tmp_path / "cache", "--labels-csv",
                                            str(tmp_path / "labels.csv"), *split)) == 0  # fmt: skip
    assert json.loads((out / "arm.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_a_description_with_control_characters_runs_resumes_and_reruns(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import tomllib

    description = "bell\a tab\t nul\x00 esc\x1b[31m del\x7f line\u2028end\nsecond line"
    study = attack_study(tmp_path, attack_data, description=description)
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 0
    resolved = tomllib.loads((out / "study.toml").read_text(encoding="utf-8"))
    assert resolved["study"]["description"] == description
    capsys.readouterr()
    ring = "study.description=ring\a\x1b"  # a bare word: --set takes it as a string
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out), "--set", ring) == 0
    header = (out / "study.toml").read_text(encoding="utf-8").splitlines()[0]
    assert header.endswith("--set study.description=ring\\x07\\x1b.")  # escaped comment
    assert run_cli(monkeypatch, "run", str(out / "study.toml"), "--out", str(out)) == 0
    stdout, _ = output(capsys)
    # both reruns found the finished arm complete (output() removes whitespace)
    assert stdout.count(squeeze("1 of 1 arms complete; nothing to run")) == 2
    assert not (out / ".lock").exists() and not (out / ".lock.json").exists()


def test_a_raw_control_character_in_a_study_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = tmp_path / "raw.toml"
    study.write_text('[study]\ndescription = "bell\a"\n[models.custom_cnn]\n', encoding="utf-8")
    assert run_cli(monkeypatch, "run", str(study), "--out", str(tmp_path / "out")) == 2
    _, err = output(capsys)
    assert f"{squeeze(study)}:notvalidTOML" in err


def test_a_non_empty_data_dir_for_embedded_data_says_set_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    data_dir = tmp_path / "mine"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("my own files")
    study, out = attack_study(tmp_path, data_dir), tmp_path / "out"
    for _ in range(2):  # the failed run released its lock
        assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 2
        _, err = output(capsys)
        assert f"data.dir={squeeze(data_dir)}" in err and "setdata.dir" in err
        assert "--out" not in err
    assert sorted(p.name for p in data_dir.iterdir()) == ["notes.txt"]


def test_an_empty_test_split_stops_the_study_before_training(
    class_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 22 item 2: a CSV without a `split` column trained every arm, then each failed
    on its Grad-CAMs (empty test split) and there was no report (exit 1)."""
    import tomli_w

    rows = [f"{p.relative_to(class_folders).as_posix()},{int(p.parent.name == 'all')}"
            for p in sorted(class_folders.glob("*/*.bmp"))]  # fmt: skip
    (class_folders / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    study = tmp_path / "no_split.toml"
    study.write_text(tomli_w.dumps({
        "study": {"name": "no-split", "device": "cpu"},
        "data": {"source": str(class_folders), "labels_csv": "labels.csv", "split": "image",
                 "cache_dir": str(tmp_path / "cache")},
        "training": {"image_size": 72, "epochs": 1},
        "models": {"custom_cnn": {}},
    }))  # fmt: skip
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 2
    _, err = output(capsys)
    assert "thetestsplitisempty" in err and "adda`split`column" in err
    assert "test_fraction" in err and "Traceback" not in err
    # nothing ran: no image cache, no arm (only the record of the checked images)
    assert not list((tmp_path / "cache").glob("*/images.npy")) and not (out / "arms").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["checked"]


@pytest.mark.slow  # trains an arm
def test_a_failing_optional_step_keeps_the_arm_complete_and_shows_in_the_report(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 22 item 2: Grad-CAM failed on every arm, each was recorded as failed and there
    was no report (exit 1)."""
    from leukaug.trained import arm_cams

    def broken_cams(*args, **kwargs):
        raise ValueError("cannot reshape array of size 0 into shape (0,newaxis)")

    monkeypatch.setattr(arm_cams, "write_arm_cams", broken_cams)
    out = tmp_path / "out"
    study = attack_study(tmp_path, attack_data)
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 0
    (arm,) = (out / "arms").iterdir()
    info = json.loads((arm / "arm.json").read_text())
    assert info["status"] == "complete" and not (arm / "error.json").exists()
    assert [f["step"] for f in info["optional_failures"]] == ["cams"]
    assert "cannot reshape array of size 0" in info["optional_failures"][0]["error"]
    summary = (out / "summary.md").read_text() + (out / "report.html").read_text()
    assert f"Arm {arm.name}: optional step(s) failed (cams: ValueError" in summary


@pytest.mark.slow  # trains an arm
def test_train_onto_a_full_disk_exits_2_and_leaves_the_arm_resumable(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 22 item 1: `--out` on a 2 MB file system ended in an OSError traceback and left
    the arm `running`. (The byte-identical resume after freeing space is
    tests/arm/test_attacks_checkpoints.py's.)"""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        out = disk / "arm"
        status = run_cli(monkeypatch, "train", "--data", str(tiny_cnmc), "--model", "custom_cnn",
                         "--image-size", "72", "--epochs", "1", "--batch-size", "8", "--out",
                         str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu")  # fmt: skip
        _, err = output(capsys)
        assert status == 2 and "Traceback" not in err
        assert squeeze(f"cannot write {out / 'checkpoint.pt'}: No space left on device") in err
        assert squeeze(f"{out} has") in err and "freespacethere" in err
        assert json.loads((out / "arm.json").read_text())["status"] == "interrupted"
        assert not list(out.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
