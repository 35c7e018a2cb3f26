"""A user's own cells, end to end as docs/your-data.md tells it: the 40 real C-NMC cells as a
folder per class with no test set (`[data] test_fraction` in the study file, nothing else)
and as ImageFolder split folders (no options at all); then predict and explain on them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from cli_tools import run_cli
from real_cells import IMAGEFOLDER_TEST, class_folder_layout, imagefolder_layout


def write_study(path: Path, data: dict) -> Path:
    table = {
        "study": {"name": "your_data", "device": "cpu"},
        "data": data,
        "training": {"image_size": 72, "epochs": 1, "batch_size": 16},
        "models": {"custom_cnn": {}},
        "executor": {"threads": 1},
        "tracking": {"tensorboard": False},
    }
    path.write_text(tomli_w.dumps(table), encoding="utf-8")
    return path


def cnn_arm(out: Path) -> Path:
    """The study's custom_cnn arm (a features baseline arm may sit beside it)."""
    (arm,) = (p for p in (out / "arms").glob("custom_cnn-*") if (p / "arm.json").is_file())
    return arm


def subjects_per_split(arm: Path) -> pd.Series:
    predictions = pd.read_csv(arm / "predictions.csv", dtype={"subject": str})
    return predictions.groupby("subject")["split"].nunique()


@pytest.mark.slow  # two tiny trainings and a report (~30 s on two shared cores)
def test_a_folder_per_class_runs_with_test_fraction_then_predicts_and_explains(
    real_cells: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = class_folder_layout(real_cells, tmp_path / "cells")
    data = {"source": str(cells), "test_fraction": 0.3, "normalize": "macenko",
            "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    study = write_study(tmp_path / "study.toml", data)
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 0

    info = json.loads((out / "dataset.json").read_text())
    assert info["layout"] == "folders" and info["split"]["test"].startswith("held out: 0.3")
    assert info["normalize"]["method"] == "macenko"
    assert (
        info["normalize"]["source"].startswith("fitted to")
        and "training images" in info["normalize"]["source"]
    )
    for class_name in ("ALL", "HEM"):
        assert info["counts"]["test"][class_name]["subjects"] >= 1
    arm = cnn_arm(out)
    assert (subjects_per_split(arm) == 1).all()  # subject-level: no subject in two splits
    assert {"val", "test"} <= set(pd.read_csv(arm / "predictions.csv")["split"])

    # resumed: the same held-out test set (the arm is complete and is not retrained)
    finished = (arm / "arm.json").read_text()
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 0
    again = json.loads((out / "dataset.json").read_text())
    assert again["split_fingerprint"] == info["split_fingerprint"]
    assert (arm / "arm.json").read_text() == finished

    predictions = tmp_path / "predictions.csv"
    assert (
        run_cli(monkeypatch, "predict", str(arm), str(cells / "hem"), "--out", str(predictions))
        == 0
    )
    table = pd.read_csv(predictions)
    assert len(table) == 13 and table["prob"].between(0, 1).all()
    png_named_bmp = cells / "hem" / "UID_H10_100_1_hem.png"
    explained = tmp_path / "explained"
    assert (
        run_cli(monkeypatch, "explain", str(arm), str(png_named_bmp), "--out", str(explained)) == 0
    )
    cams = pd.read_csv(explained / "cam.csv")
    assert len(cams) == 1 and cams["prob"].between(0, 1).all()
    assert (explained / "UID_H10_100_1_hem_cam.png").is_file()


@pytest.mark.slow
def test_an_imagefolder_layout_runs_with_no_options(
    real_cells: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = imagefolder_layout(real_cells, tmp_path / "split")
    study = write_study(
        tmp_path / "study.toml", {"source": str(root), "cache_dir": str(tmp_path / "c")}
    )
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["layout"] == "imagefolder"
    predictions = pd.read_csv(cnn_arm(out) / "predictions.csv", dtype={"subject": str})
    test_subjects = set(predictions.loc[predictions["split"] == "test", "subject"])
    assert test_subjects == IMAGEFOLDER_TEST  # the test/ folder is the test set


def test_the_dry_run_warns_of_a_leak_only_when_a_subject_is_in_two_splits(
    real_cells: Path, tmp_path: Path
) -> None:
    import warnings

    from leukaug.study.dry_run import preview_study
    from leukaug.study.study_file import read_study_file

    cells = class_folder_layout(real_cells, tmp_path / "cells")
    for number, image in enumerate(sorted(cells.rglob("UID_*"))):  # no subject ids
        image.rename(image.with_name(f"cell_{number}{image.suffix}"))
    csv = tmp_path / "cells" / "labels.csv"
    rows = [
        {"path": p.relative_to(cells).as_posix(), "label": int(p.parent.name == "all"),
         "split": "test" if i % 4 == 0 else "train"}
        for i, p in enumerate(sorted(cells.rglob("cell_*")))
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(csv, index=False)
    data = {"source": str(cells), "labels_csv": str(csv), "split": "image"}
    study = read_study_file(write_study(tmp_path / "image.toml", data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 subjects in two splits: no leak warning
        preview_study(study, tmp_path / "out")

    with_subjects = class_folder_layout(real_cells, tmp_path / "subjects")
    data = {"source": str(with_subjects), "split": "image", "test_fraction": 0.3}
    study = read_study_file(write_study(tmp_path / "leak.toml", data))
    with pytest.warns(UserWarning, match=r"image-level split: [1-9]\d* subject\(s\)"):
        preview_study(study, tmp_path / "out2")
