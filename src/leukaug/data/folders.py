"""Generic layouts: one folder per class, ImageFolder split folders
(`ROOT/{train,test[,val]}/{CLASS}/`), or a CSV of `path,label[,subject][,split]`."""

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


# ImageFolder split folders (torchvision's convention): ROOT/{train,test[,val]}/{CLASS}/.
SPLIT_FOLDERS = {
    "train": "train",
    "test": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}
# Folder names read as ALL / HEM without --positive-class (compared in lower case).
KNOWN_CLASSES = {"all": LABEL_ALL, "hem": LABEL_HEM}


def split_folders(root: Path) -> dict[str, Path]:
    """{"train" | "test" | "val": folder} for the ImageFolder split folders directly under `root`."""
    found: dict[str, Path] = {}
    for entry in sorted(p for p in root.iterdir() if p.is_dir()):
        split = SPLIT_FOLDERS.get(entry.name.lower())
        if split is None:
            continue
        if split in found:
            raise DataError(
                f"{root}: both {found[split].name}/ and {entry.name}/ are {split} folders. "
                "Fix: keep one of them."
            )
        found[split] = entry
    return found


def class_folders(folder: Path) -> list[Path]:
    """The class folders directly under `folder` (hidden folders left out), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_positive_class(
    folder: Path, names: list[str], positive_class: str | None, notes: list[str]
) -> str:
    """The ALL folder's name: `positive_class`, or `all` when the folders are `all` and `hem`."""
    if positive_class is None:
        lower = {name.lower(): name for name in names}
        if len(names) == 2 and set(lower) == set(KNOWN_CLASSES):
            notes.append(f"positive class (ALL): folder {lower['all']!r}, from the folder names")
            return lower["all"]
        raise DataError(
            f"{folder}: looks like one folder per class ({', '.join(names) or 'no folders'}) "
            "but no positive class was given. Fix: pass --positive-class NAME (the ALL folder), "
            "or [data] positive_class in the study file."
        )
    if positive_class not in names:
        raise DataError(f"{folder}: {unknown_name_message('class folder', positive_class, names)}")
    return positive_class


def read_class_folders(
    root: Path, positive_class: str | None, ignored: list[Path]
) -> tuple[list[Row], list[str]]:
    """One folder per class under `root`; `positive_class` names the ALL (label 1) folder
    (optional when the folders are `all` and `hem`).

    Subjects: a subfolder inside a class folder is a subject; otherwise a C-NMC file name
    gives it; otherwise each image is its own subject (and a note says so).
    """
    notes: list[str] = []
    rows, per_image = _read_classes(root, root, positive_class, ignored, "train", notes)
    return rows, notes + _per_image_note(per_image)


def read_image_folder(
    root: Path, positive_class: str | None, ignored: list[Path]
) -> tuple[list[Row], list[str]]:
    """ImageFolder split folders `root/{train,test[,val]}/{CLASS}/`, the same classes in each.

    Each folder's images keep their split (`source_split`); subjects as `read_class_folders`.
    """
    folders = split_folders(root)
    missing = [name for name in ("train", "test") if name not in folders]
    if missing:
        raise DataError(
            f"{root}: split folders {', '.join(f.name for f in folders.values())} but no "
            f"{' and no '.join(m + '/' for m in missing)} folder. An ImageFolder layout is "
            "ROOT/train/CLASS/ and ROOT/test/CLASS/ (val/ optional). Fix: add the missing "
            "folder, or use one folder per class with [data] test_fraction."
        )
    for entry in root.iterdir():
        if entry.is_file():
            ignored.append(entry)
    names = {split: [p.name for p in class_folders(folder)] for split, folder in folders.items()}
    if len({tuple(n) for n in names.values()}) > 1:
        shown = "; ".join(f"{folders[s].name}/: {', '.join(n)}" for s, n in names.items())
        raise DataError(
            f"{root}: the split folders hold different class folders ({shown}). "
            "Fix: give every split folder the same two class folders."
        )
    notes: list[str] = []
    rows: list[Row] = []
    per_image = 0
    for split, folder in folders.items():
        found, count = _read_classes(folder, root, positive_class, ignored, split, notes)
        rows += found
        per_image += count
    return rows, list(dict.fromkeys(notes)) + _per_image_note(per_image)


def _read_classes(
    folder: Path,
    root: Path,
    positive_class: str | None,
    ignored: list[Path],
    source_split: str,
    notes: list[str],
) -> tuple[list[Row], int]:
    """Rows of the class folders under `folder` (and how many images are their own subject)."""
    class_dirs = class_folders(folder)
    if folder == root:
        for entry in root.iterdir():
            if entry.is_file():
                ignored.append(entry)
    names = [p.name for p in class_dirs]
    positive = resolve_positive_class(folder, names, positive_class, notes)
    if len(class_dirs) != 2:
        raise DataError(
            f"{folder}: found {len(class_dirs)} class folders ({', '.join(names)}); leukaug is "
            "binary and needs exactly 2. Fix: keep one ALL folder and one HEM folder."
        )
    depth = len(folder.relative_to(root).parts) + 1  # parts of ".../CLASS/"
    rows: list[Row] = []
    per_image_subjects = 0
    for class_dir in class_dirs:
        label = LABEL_ALL if class_dir.name == positive else LABEL_HEM
        images = list_images(class_dir, ignored, recursive=True, root=root)
        if not images:
            raise DataError(
                f"{class_dir}: class folder {class_dir.name!r} holds no images. "
                "Fix: add its images or remove the folder."
            )
        for path in images:
            relative = path.relative_to(root)
            subject = subject_from_parts(relative, depth)
            if subject is None:
                parsed = try_parse_cnmc_name(path.name)
                subject = parsed[0] if parsed else None
            if subject is None:
                subject = relative.as_posix()
                per_image_subjects += 1
            rows.append(make_row(root, path, label, subject, source_split, -1))
    return rows, per_image_subjects


def _per_image_note(count: int) -> list[str]:
    if not count:
        return []
    return [
        f"{count} images have no subject (no subject subfolder, no C-NMC name); "
        "each is treated as its own subject, so a subject-level split cannot prevent leakage."
    ]


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
