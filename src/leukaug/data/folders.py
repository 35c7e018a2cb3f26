"""Generic layouts: one folder per class, or a CSV of `path,label[,subject][,split]`."""

from __future__ import annotations

from pathlib import Path

from leukaug import LABEL_ALL, LABEL_HEM
from leukaug.core.errors import DataError, unknown_name_message
from leukaug.data.cnmc_names import try_parse_cnmc_name
from leukaug.data.files import (
    Row,
    list_images,
    make_row,
    parse_label,
    read_csv_table,
    resolve_inside,
)
from leukaug.data.images import is_image_file


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
        images = list_images(class_dir, ignored, recursive=True, root=root)
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
