"""Reading data sets into manifests: both C-NMC layouts, generic layouts, and every bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukaug.core.errors import DataError
from leukaug.data.images import open_rgb
from leukaug.data.read import MANIFEST_COLUMNS, read_dataset

TEST_DIR = Path("validation_data", "C-NMC_test_prelim_phase_data")
LABELS = Path("validation_data", "C-NMC_test_prelim_phase_data_labels.csv")


def _first_training_image(root: Path, fold: int = 0, class_name: str = "all") -> Path:
    return sorted((root / "training_data" / f"fold_{fold}" / class_name).iterdir())[0]


def _edit_labels(root: Path, edit) -> None:
    table = pd.read_csv(root / LABELS, dtype=str)
    edit(table)
    table.to_csv(root / LABELS, index=False)


# ----------------------------------------------------------------------------- good input


def test_kaggle_layout_manifest(tiny_cnmc: Path) -> None:
    dataset = read_dataset(tiny_cnmc)
    manifest = dataset.manifest
    assert dataset.layout == "cnmc_kaggle"
    assert dataset.synthetic is True
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest["image_id"]) == sorted(manifest["image_id"])
    assert set(manifest["source_split"]) == {"train", "test"}
    assert set(manifest.loc[manifest["source_split"] == "train", "fold"]) == {0, 1, 2}
    assert (manifest.loc[manifest["source_split"] == "test", "fold"] == -1).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in manifest["path"])
    train = manifest[manifest["source_split"] == "train"]
    assert ((train["image_id"].str.endswith("_all.bmp")) == (train["label"] == 1)).all()
    assert train.loc[train["label"] == 0, "subject"].str.startswith("H").all()
    assert dataset.modes == {"RGB": len(manifest)} and dataset.conversions == {}
    assert dataset.sizes == {"40x40": len(manifest)}


def test_test_labels_joined_by_name_not_by_directory_order(tiny_cnmc: Path) -> None:
    """Seed-paper defect 2: pairing CSV rows with a sorted directory listing mislabels files."""
    csv = pd.read_csv(tiny_cnmc / LABELS)
    truth = dict(zip(csv["new_names"], csv["labels"], strict=True))
    assert len(truth) >= 11  # so that 10.bmp sorts before 2.bmp

    listing = sorted(os.listdir(tiny_cnmc / TEST_DIR))  # 1.bmp, 10.bmp, 11.bmp, ..., 2.bmp
    naive = dict(zip(listing, csv["labels"], strict=True))  # CSV rows are in numeric order
    assert listing[:2] == ["1.bmp", "10.bmp"]
    assert any(naive[name] != truth[name] for name in listing), (
        "the directory-order pairing should fail"
    )

    test = read_dataset(tiny_cnmc).manifest.query("source_split == 'test'")
    read_labels = {
        Path(i).name: label for i, label in zip(test["image_id"], test["label"], strict=True)
    }
    assert read_labels == truth
    subjects = dict(zip(csv["new_names"], csv["Patient_ID"].str.split("_").str[1], strict=True))
    assert {
        Path(i).name: s for i, s in zip(test["image_id"], test["subject"], strict=True)
    } == subjects


def test_root_may_be_the_parent_of_cnmc_leukemia(tiny_cnmc: Path) -> None:
    direct = read_dataset(tiny_cnmc).manifest
    from_parent = read_dataset(tiny_cnmc.parent)
    assert from_parent.root == tiny_cnmc.resolve()
    pd.testing.assert_frame_equal(direct, from_parent.manifest)


def test_tcia_layout(cnmc_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "tcia"
    root.mkdir()
    shutil.move(cnmc_copy / "training_data", root / "C-NMC_training_data")
    shutil.move(cnmc_copy / TEST_DIR, root / "C-NMC_test_prelim_phase_data")
    shutil.move(cnmc_copy / LABELS, root / LABELS.name)
    (root / "C-NMC_test_final_phase_data").mkdir()
    dataset = read_dataset(root)
    assert dataset.layout == "cnmc_tcia"
    manifest = dataset.manifest
    assert set(manifest["source_split"]) == {"train", "test"}
    assert (
        manifest["image_id"]
        .str.startswith(("C-NMC_training_data/", "C-NMC_test_prelim_phase_data/"))
        .all()
    )
    assert any("final" in note for note in dataset.notes)


def test_class_folders_layout(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "folders"
    for label, name in ((1, "leukemic"), (0, "normal")):
        (root / name).mkdir(parents=True)
        for path in tiny_manifest.loc[
            (tiny_manifest["label"] == label) & (tiny_manifest["source_split"] == "train"), "path"
        ]:
            shutil.copy(path, root / name / Path(path).name)
    dataset = read_dataset(root, positive_class="leukemic")
    assert dataset.layout == "folders"
    manifest = dataset.manifest
    assert (manifest["label"] == manifest["image_id"].str.startswith("leukemic/")).all()
    assert (
        manifest.loc[manifest["label"] == 0, "subject"].str.startswith("H").all()
    )  # from C-NMC names
    assert (manifest["fold"] == -1).all() and (manifest["source_split"] == "train").all()

    with pytest.raises(DataError, match="--positive-class"):
        read_dataset(root)
    with pytest.raises(DataError, match="leukemic"):
        read_dataset(root, positive_class="leukemia")


def test_csv_layout(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "csvdata"
    (root / "imgs").mkdir(parents=True)
    rows = []
    for _, row in tiny_manifest.head(6).iterrows():
        name = f"cell_{len(rows)}.bmp"
        shutil.copy(row["path"], root / "imgs" / name)
        rows.append(
            {"path": f"imgs/{name}", "label": row["label"], "subject": f"s{row['subject']}"}
        )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    manifest = read_dataset(root, labels_csv="labels.csv").manifest
    assert list(manifest["image_id"]) == sorted(r["path"] for r in rows)
    assert dict(zip(manifest["image_id"], manifest["label"], strict=True)) == {
        r["path"]: r["label"] for r in rows
    }


# ----------------------------------------------------------------------------- bad input


def test_missing_root_and_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_dataset(tmp_path / "nowhere")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="cannot tell the layout"):
        read_dataset(tmp_path / "x")
    with pytest.raises(DataError, match="unknown layout"):
        read_dataset(tmp_path / "x", layout="kaggle")


def test_missing_class_folder(cnmc_copy: Path) -> None:
    shutil.rmtree(cnmc_copy / "training_data" / "fold_1" / "hem")
    with pytest.raises(DataError, match=r"fold_1/hem: folder missing.*Fix"):
        read_dataset(cnmc_copy)


def test_missing_fold_folders(cnmc_copy: Path) -> None:
    for fold in range(3):
        shutil.rmtree(cnmc_copy / "training_data" / f"fold_{fold}")
    with pytest.raises(DataError, match="no fold_0"):
        read_dataset(cnmc_copy)


def test_missing_test_labels_csv(cnmc_copy: Path) -> None:
    (cnmc_copy / LABELS).unlink()
    with pytest.raises(DataError, match="labels CSV is missing"):
        read_dataset(cnmc_copy)


def test_empty_class(cnmc_copy: Path) -> None:
    folder = cnmc_copy / "training_data" / "fold_0" / "all"
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"fold_0/all: empty class"):
        read_dataset(cnmc_copy)


def test_unreadable_image(cnmc_copy: Path) -> None:
    bad = _first_training_image(cnmc_copy)
    bad.write_bytes(b"this is not a bitmap")
    with pytest.raises(DataError, match=rf"{bad.name}: cannot read this image"):
        read_dataset(cnmc_copy)


def test_truncated_image(cnmc_copy: Path) -> None:
    bad = _first_training_image(cnmc_copy, fold=2, class_name="hem")
    bad.write_bytes(bad.read_bytes()[:-500])
    with pytest.raises(DataError, match=rf"{bad.name}: .*truncated"):
        read_dataset(cnmc_copy)


def test_non_image_files_are_ignored_and_reported(cnmc_copy: Path) -> None:
    (cnmc_copy / "training_data" / "fold_0" / "all" / ".DS_Store").write_bytes(b"\0\0")
    (cnmc_copy / TEST_DIR / "Thumbs.db").write_bytes(b"\0\0")
    dataset = read_dataset(cnmc_copy)
    assert dataset.ignored == [
        "training_data/fold_0/all/.DS_Store",
        "validation_data/C-NMC_test_prelim_phase_data/Thumbs.db",
    ]
    assert any("ignored" in note for note in dataset.notes)
    assert not dataset.manifest["image_id"].str.contains("DS_Store|Thumbs").any()


def test_csv_row_without_file(cnmc_copy: Path) -> None:
    (cnmc_copy / TEST_DIR / "3.bmp").unlink()
    with pytest.raises(DataError, match=r"line 4: new_names '3.bmp' has no file"):
        read_dataset(cnmc_copy)


def test_test_file_missing_from_csv(cnmc_copy: Path) -> None:
    count = len(list((cnmc_copy / TEST_DIR).glob("*.bmp")))
    shutil.copy(cnmc_copy / TEST_DIR / "1.bmp", cnmc_copy / TEST_DIR / f"{count + 1}.bmp")
    with pytest.raises(DataError, match=rf"have no row in the CSV \({count + 1}.bmp\)"):
        read_dataset(cnmc_copy)


def test_duplicate_training_name(cnmc_copy: Path) -> None:
    source = _first_training_image(cnmc_copy, fold=0)
    shutil.copy(source, cnmc_copy / "training_data" / "fold_1" / "all" / source.name)
    with pytest.raises(DataError, match="duplicate name"):
        read_dataset(cnmc_copy)


def test_duplicate_csv_row(cnmc_copy: Path) -> None:
    def duplicate(table: pd.DataFrame) -> None:
        table.loc[1, "new_names"] = table.loc[0, "new_names"]

    _edit_labels(cnmc_copy, duplicate)
    with pytest.raises(DataError, match=r"duplicate new_names '1\.bmp'"):
        read_dataset(cnmc_copy)


def test_label_outside_zero_one(cnmc_copy: Path) -> None:
    _edit_labels(
        cnmc_copy, lambda table: table.__setitem__("labels", table["labels"].replace({"1": "2"}))
    )
    with pytest.raises(DataError, match="label '2' is not 0 or 1"):
        read_dataset(cnmc_copy)


def test_inverted_test_label_is_caught(cnmc_copy: Path) -> None:
    """Seed-paper defect 1: a label contradicting the original file name (1 = ALL) is an error."""

    def invert(table: pd.DataFrame) -> None:
        table.loc[0, "labels"] = str(1 - int(table.loc[0, "labels"]))

    _edit_labels(cnmc_copy, invert)
    with pytest.raises(DataError, match="inverted"):
        read_dataset(cnmc_copy)


@pytest.mark.parametrize("name", ["../escape.bmp", "/etc/passwd", "../../training_data/x.bmp"])
def test_csv_name_escaping_the_root(cnmc_copy: Path, name: str) -> None:
    _edit_labels(
        cnmc_copy, lambda table: table.__setitem__("new_names", [name, *table["new_names"][1:]])
    )
    with pytest.raises(DataError, match=r"absolute path|outside the data root"):
        read_dataset(cnmc_copy)


def test_generic_csv_path_escaping_the_root(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(tiny_manifest["path"].iloc[0], tmp_path / "outside.bmp")
    pd.DataFrame({"path": ["../outside.bmp"], "label": [1]}).to_csv(
        root / "labels.csv", index=False
    )
    with pytest.raises(DataError, match="outside the data root"):
        read_dataset(root, labels_csv="labels.csv")


def test_generic_csv_row_without_file(tmp_path: Path) -> None:
    pd.DataFrame({"path": ["missing.bmp"], "label": [0]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(DataError, match=r"line 2: the file .*missing.bmp does not exist"):
        read_dataset(tmp_path, labels_csv="labels.csv")


def test_subject_with_both_labels(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    for index in range(2):
        shutil.copy(tiny_manifest["path"].iloc[index], tmp_path / f"{index}.bmp")
    pd.DataFrame({"path": ["0.bmp", "1.bmp"], "label": [1, 0], "subject": ["P7", "P7"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(DataError, match="subject 'P7' appears with both labels"):
        read_dataset(tmp_path, labels_csv="labels.csv")


def test_unparseable_cnmc_name(cnmc_copy: Path) -> None:
    source = _first_training_image(cnmc_copy, fold=1, class_name="hem")
    source.rename(source.with_name("cell 12.bmp"))
    with pytest.raises(DataError, match=r"cannot parse the C-NMC file name 'cell 12\.bmp'"):
        read_dataset(cnmc_copy)


def test_name_contradicting_its_class_folder(cnmc_copy: Path) -> None:
    source = _first_training_image(cnmc_copy, fold=0, class_name="hem")
    shutil.move(source, cnmc_copy / "training_data" / "fold_0" / "all" / source.name)
    with pytest.raises(DataError, match="the name says HEM"):
        read_dataset(cnmc_copy)


# ----------------------------------------------------------------------------- image modes


RGB = np.array([[[200, 100, 50], [0, 0, 0]], [[10, 20, 30], [255, 255, 255]]], dtype=np.uint8)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Image.fromarray(RGB), RGB),
        (lambda: Image.fromarray(RGB[..., 0]), np.repeat(RGB[..., :1], 3, axis=2)),
        (lambda: Image.fromarray(np.dstack([RGB, np.full((2, 2), 255, np.uint8)])), RGB),
        (lambda: Image.fromarray(np.dstack([RGB, np.zeros((2, 2), np.uint8)])), np.zeros_like(RGB)),
        (lambda: Image.fromarray(RGB).quantize(colors=8, method=Image.Quantize.MEDIANCUT), None),
        (
            lambda: Image.fromarray(RGB[..., 0].astype(np.uint16) << 8),
            np.repeat(RGB[..., :1], 3, axis=2),
        ),
    ],
    ids=["RGB", "L", "RGBA-opaque", "RGBA-transparent", "P", "I;16"],
)
def test_modes_are_converted_explicitly(tmp_path: Path, make, expected) -> None:
    image = make()
    path = tmp_path / "image.png"
    image.save(path)
    rgb, mode = open_rgb(path)
    assert mode == image.mode
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    if expected is not None:
        np.testing.assert_array_equal(rgb, expected)


def test_conversions_are_counted(tiny_manifest: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "modes"
    for name in ("ALL", "HEM"):
        (root / name).mkdir(parents=True)
    label_paths = tiny_manifest.groupby("label")["path"].first()
    Image.open(label_paths[1]).save(root / "ALL" / "UID_1_1_1_all.png")
    Image.open(label_paths[0]).convert("L").save(root / "HEM" / "UID_H2_1_1_hem.png")
    Image.open(label_paths[0]).convert("RGBA").save(root / "HEM" / "UID_H2_1_2_hem.png")
    dataset = read_dataset(root, positive_class="ALL")
    assert dataset.conversions == {"L": 1, "RGBA": 1}
    assert dataset.modes == {"L": 1, "RGB": 1, "RGBA": 1}
