"""Readers for the two C-NMC 2019 layouts (TCIA release and Kaggle mirror).

Training images carry their class and subject in their names
(`UID_<subject>_<image>_<cell>_all.bmp`, healthy `UID_H<subject>_..._hem.bmp`). The
numbered preliminary-test images (`1.bmp` ... `1867.bmp`) get their labels from
`C-NMC_test_prelim_phase_data_labels.csv`, joined BY FILE NAME (`new_names`): never by
sort order, since a directory lists 1, 10, 100, ... while the CSV is in numeric order.
"""

from __future__ import annotations

import re
from pathlib import Path

from leukaug.core.errors import DataError
from leukaug.data.choices import KAGGLE, TCIA
from leukaug.data.cnmc_names import CLASS_FOLDERS, parse_cnmc_name
from leukaug.data.files import (
    Row,
    list_images,
    make_row,
    parse_label,
    read_csv_table,
    resolve_inside,
)

TEST_FOLDER = "C-NMC_test_prelim_phase_data"
TEST_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_TEST_FOLDER = "C-NMC_test_final_phase_data"


def detect(root: Path) -> tuple[Path, str] | None:
    """(data root, layout) if `root`, its `C-NMC_Leukemia` child, or its child's child is C-NMC."""
    candidates = [root, root / "C-NMC_Leukemia"]
    candidates += (
        [child for child in sorted(root.iterdir()) if child.is_dir()] if root.is_dir() else []
    )
    candidates += [c / "C-NMC_Leukemia" for c in candidates[2:]]
    for candidate in candidates:
        if (candidate / "training_data").is_dir() or (candidate / "validation_data").is_dir():
            return candidate, KAGGLE
        if (candidate / "C-NMC_training_data").is_dir() or (candidate / TEST_FOLDER).is_dir():
            return candidate, TCIA
    return None


def read_kaggle(root: Path, ignored: list[Path]) -> tuple[list[Row], list[str]]:
    """`training_data/fold_*/{all,hem}/`, `validation_data/<TEST_FOLDER>/` + labels CSV."""
    rows: list[Row] = []
    notes: list[str] = []
    training = root / "training_data"
    validation = root / "validation_data"
    if training.is_dir():
        rows += read_training_folds(training, root, ignored)
    else:
        notes.append(f"no training_data folder in {root}: only the test set was read")
    if validation.is_dir():
        rows += read_test_set(validation / TEST_FOLDER, validation / TEST_LABELS, root, ignored)
    else:
        notes.append(f"no validation_data folder in {root}: no labelled test set")
    if (root / "testing_data").is_dir():
        notes.append("testing_data (final-phase test) skipped: its labels were never published")
    if not rows:
        raise DataError(
            f"{root}: no images found. Fix: point leukaug at the C-NMC_Leukemia folder."
        )
    return rows, notes


def read_tcia(root: Path, ignored: list[Path]) -> tuple[list[Row], list[str]]:
    """`C-NMC_training_data/fold_*/{all,hem}/`, `<TEST_FOLDER>/` + labels CSV beside or inside it."""
    rows: list[Row] = []
    notes: list[str] = []
    training = root / "C-NMC_training_data"
    if training.is_dir():
        rows += read_training_folds(training, root, ignored)
    else:
        notes.append(f"no C-NMC_training_data folder in {root}: only the test set was read")
    test_folder = root / TEST_FOLDER
    if test_folder.is_dir():
        labels = root / TEST_LABELS
        if not labels.is_file() and (test_folder / TEST_LABELS).is_file():
            labels = test_folder / TEST_LABELS
        rows += read_test_set(test_folder, labels, root, ignored)
    else:
        notes.append(f"no {TEST_FOLDER} folder in {root}: no labelled test set")
    if (root / FINAL_TEST_FOLDER).is_dir():
        notes.append(f"{FINAL_TEST_FOLDER} skipped: its labels were never published")
    if not rows:
        raise DataError(
            f"{root}: no images found. Fix: point leukaug at the folder holding C-NMC_training_data."
        )
    return rows, notes


def read_training_folds(training: Path, root: Path, ignored: list[Path]) -> list[Row]:
    """Every fold_<k>/{all,hem} folder; class from the folder, checked against the file name."""
    folds = sorted(
        (p for p in training.iterdir() if p.is_dir() and re.fullmatch(r"fold_\d+", p.name)),
        key=lambda p: int(p.name.split("_")[1]),
    )
    if not folds:
        raise DataError(
            f"{training}: no fold_0, fold_1, ... folders. "
            "Fix: restore the C-NMC layout training_data/fold_{0,1,2}/{all,hem}/."
        )
    rows: list[Row] = []
    first_seen: dict[str, Path] = {}
    for fold_dir in folds:
        fold = int(fold_dir.name.split("_")[1])
        for class_name, label in CLASS_FOLDERS.items():
            class_dir = fold_dir / class_name
            if not class_dir.is_dir():
                raise DataError(
                    f"{class_dir}: folder missing. Every fold needs an 'all' and a 'hem' folder. "
                    "Fix: restore it from the original download."
                )
            images = list_images(class_dir, ignored, root=root)
            if not images:
                raise DataError(
                    f"{class_dir}: empty class folder (no images). "
                    "Fix: restore its images from the original download."
                )
            for path in images:
                subject, name_label = parse_cnmc_name(path.name, path)
                if name_label != label:
                    raise DataError(
                        f"{path}: the name says {'ALL' if name_label else 'HEM'} but the file is in "
                        f"the '{class_name}' folder. Fix: move it to the folder its name gives."
                    )
                key = path.name.lower()
                if key in first_seen:
                    raise DataError(
                        f"{path}: duplicate name; the same file name is also at {first_seen[key]}. "
                        "Fix: keep one copy."
                    )
                first_seen[key] = path
                rows.append(make_row(root, path, label, subject, "train", fold))
    return rows


def read_test_set(folder: Path, labels_csv: Path, root: Path, ignored: list[Path]) -> list[Row]:
    """Numbered test images joined to `labels_csv` by file name (`new_names`)."""
    if not folder.is_dir():
        raise DataError(
            f"{folder}: the test image folder is missing. Fix: restore {folder.name}/ beside the labels CSV."
        )
    if not labels_csv.is_file():
        raise DataError(
            f"{labels_csv}: the test labels CSV is missing, so the test images in {folder} "
            "cannot be labelled. Fix: restore the CSV from the original download."
        )
    table = read_csv_table(labels_csv, ["Patient_ID", "new_names", "labels"])
    files = {p.name: p for p in list_images(folder, ignored, root=root)}
    if not files:
        raise DataError(f"{folder}: no test images. Fix: restore them from the original download.")
    rows: list[Row] = []
    seen_names: dict[str, int] = {}
    seen_originals: dict[str, int] = {}
    real_folder = folder.resolve()
    for line, record in enumerate(table.to_dict("records"), start=2):
        where = f"{labels_csv}, line {line}"
        new_name = record["new_names"].strip()
        original = record["Patient_ID"].strip()
        path = resolve_inside(folder, new_name, where)
        for value, seen, column in (
            (new_name, seen_names, "new_names"),
            (original, seen_originals, "Patient_ID"),
        ):
            if value in seen:
                raise DataError(
                    f"{where}: duplicate {column} {value!r} (first on line {seen[value]}). "
                    "Fix: each test image must appear exactly once."
                )
            seen[value] = line
        label = parse_label(record["labels"], where)
        subject, name_label = parse_cnmc_name(original, where)
        if name_label != label:
            raise DataError(
                f"{where}: labels={label} but Patient_ID {original!r} is a "
                f"{'ALL' if name_label else 'HEM'} file name (1 = ALL, 0 = HEM). "
                "Fix: correct the row; the labels may have been inverted."
            )
        if path.name not in files or path.parent != real_folder:
            raise DataError(
                f"{where}: new_names {new_name!r} has no file in {folder}. "
                "Fix: restore the image or remove the row."
            )
        rows.append(make_row(root, files[path.name], label, subject, "test", -1))
    missing = sorted(set(files) - set(seen_names), key=_numeric_key)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{labels_csv}: {len(missing)} test image(s) in {folder} have no row in the CSV ({shown}). "
            "Fix: restore the complete labels CSV, or remove the unlabelled images."
        )
    return rows


def _numeric_key(name: str) -> tuple[int, str]:
    stem = Path(name).stem
    return (int(stem), name) if stem.isdigit() else (10**12, name)
