"""Generic layouts: one folder per class, or a CSV of `path,label[,subject][,split]`.

Also the small helpers every reader shares: listing a folder's images (non-image files
are collected, not fatal) and keeping CSV names inside the data root.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leukaug import LABEL_ALL, LABEL_HEM
from leukaug.data.images import is_image_file
from leukaug.errors import DataError, unknown_name_message

Row = dict[str, object]


def list_images(folder: Path, ignored: list[Path], recursive: bool = False) -> list[Path]:
    """Image files in `folder`, sorted; everything else that is a file goes to `ignored`."""
    entries = folder.rglob("*") if recursive else folder.iterdir()
    images = []
    for entry in sorted(entries):
        if not entry.is_file():
            continue
        if is_image_file(entry):
            images.append(entry)
        else:
            ignored.append(entry)
    return images


def resolve_inside(root: Path, name: str, where: str) -> Path:
    """`root / name`, refusing absolute names and names that escape `root` (`../`)."""
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")):
        raise DataError(
            f"{where}: {name!r} is an absolute path. "
            f"Fix: write paths relative to the data root {root}."
        )
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(
            f"{where}: {name!r} points outside the data root {root}. "
            "Fix: keep every image inside the data root and write its path relative to it."
        )
    return resolved


def parse_label(value: object, where: str) -> int:
    """A label cell as 0 or 1 (ALL = 1); anything else raises."""
    text = str(value).strip()
    if text not in ("0", "1"):
        raise DataError(
            f"{where}: label {text!r} is not 0 or 1. "
            "Fix: use 1 for ALL (leukemic, positive) and 0 for HEM (healthy)."
        )
    return int(text)


def read_csv_table(path: Path, required: list[str]) -> pd.DataFrame:
    """A CSV with all cells as strings; raises if it is unreadable or lacks `required` columns."""
    if not path.is_file():
        raise DataError(f"{path}: the CSV file does not exist. Fix: check the path.")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(
            f"{path}: cannot parse the CSV ({error}). Fix: write it as plain comma-separated text."
        ) from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(table.columns) or 'none'}. "
            f"Fix: the header must include {', '.join(required)}."
        )
    if table.empty:
        raise DataError(f"{path}: the CSV has a header but no rows. Fix: list at least one image.")
    return table


def subject_from_parts(relative: Path, class_folder_depth: int) -> str | None:
    """The first folder below the class folder, when images are grouped by subject."""
    parts = relative.parts
    return parts[class_folder_depth] if len(parts) > class_folder_depth + 1 else None


def read_class_folders(
    root: Path, positive_class: str | None, ignored: list[Path]
) -> tuple[list[Row], list[str]]:
    """One folder per class under `root`; `positive_class` names the ALL (label 1) folder.

    Subjects: a subfolder inside a class folder is a subject; otherwise a C-NMC file name
    gives it; otherwise each image is its own subject (and a note says so).
    """
    from leukaug.data.cnmc import try_parse_cnmc_name

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for entry in root.iterdir():
        if entry.is_file():
            ignored.append(entry)
    names = [p.name for p in class_dirs]
    if positive_class is None:
        raise DataError(
            f"{root}: looks like one folder per class ({', '.join(names) or 'no folders'}) "
            "but no positive class was given. Fix: pass --positive-class NAME (the ALL folder)."
        )
    if positive_class not in names:
        raise DataError(f"{root}: {unknown_name_message('class folder', positive_class, names)}")
    if len(class_dirs) != 2:
        raise DataError(
            f"{root}: found {len(class_dirs)} class folders ({', '.join(names)}); leukaug is binary "
            "and needs exactly 2. Fix: keep one ALL folder and one HEM folder."
        )
    rows: list[Row] = []
    notes: list[str] = []
    per_image_subjects = 0
    for class_dir in class_dirs:
        label = LABEL_ALL if class_dir.name == positive_class else LABEL_HEM
        images = list_images(class_dir, ignored, recursive=True)
        if not images:
            raise DataError(
                f"{class_dir}: class folder {class_dir.name!r} holds no images. "
                "Fix: add its images or remove the folder."
            )
        for path in images:
            relative = path.relative_to(root)
            subject = subject_from_parts(relative, 1)
            if subject is None:
                parsed = try_parse_cnmc_name(path.name)
                subject = parsed[0] if parsed else None
            if subject is None:
                subject = relative.as_posix()
                per_image_subjects += 1
            rows.append(make_row(root, path, label, subject, "train", -1))
    if per_image_subjects:
        notes.append(
            f"{per_image_subjects} images have no subject (no subject subfolder, no C-NMC name); "
            "each is treated as its own subject, so a subject-level split cannot prevent leakage."
        )
    return rows, notes


def read_csv_list(root: Path, csv_path: Path) -> tuple[list[Row], list[str]]:
    """A CSV of `path,label[,subject][,split]`; paths relative to `root`."""
    table = read_csv_table(csv_path, ["path", "label"])
    rows: list[Row] = []
    notes: list[str] = []
    seen: dict[Path, int] = {}
    per_image_subjects = 0
    for index, record in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        where = f"{csv_path}, line {index}"
        path = resolve_inside(root, record["path"].strip(), where)
        if path in seen:
            raise DataError(
                f"{where}: {record['path']!r} is listed twice (first on line {seen[path]}). "
                "Fix: list every image once."
            )
        seen[path] = index
        if not path.is_file():
            raise DataError(
                f"{where}: the file {path} does not exist. Fix: correct the path or remove the row."
            )
        if not is_image_file(path):
            raise DataError(
                f"{where}: {path.name!r} is not an image file. Fix: list only image files."
            )
        label = parse_label(record["label"], where)
        subject = str(record.get("subject", "")).strip()
        if not subject:
            subject = path.relative_to(root.resolve()).as_posix()
            per_image_subjects += 1
        split = str(record.get("split", "train")).strip() or "train"
        if split not in ("train", "test"):
            raise DataError(
                f"{where}: split {split!r} is not 'train' or 'test'. Fix: use one of those."
            )
        rows.append(make_row(root.resolve(), path, label, subject, split, -1))
    if per_image_subjects:
        notes.append(
            f"{per_image_subjects} rows have no subject; each such image is its own subject, "
            "so a subject-level split cannot prevent leakage."
        )
    return rows, notes


def make_row(root: Path, path: Path, label: int, subject: str, source_split: str, fold: int) -> Row:
    return {
        "image_id": path.relative_to(root).as_posix(),
        "path": str(path.resolve()),
        "label": label,
        "subject": subject,
        "source_split": source_split,
        "fold": fold,
    }
