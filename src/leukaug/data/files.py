"""Files of a data set, shared by every reader: listing a folder's images, keeping every
path inside the data root (names and symbolic links alike), CSV tables, labels and rows.

One rule for symbolic links, whatever the layout: a link (image, class folder or any
folder on the way) that resolves inside the data root is followed; one that resolves
outside it is refused, naming the link and its target.

One rule for files that are no regular readable file (`odd_reason`: a symbolic link loop,
a broken link, a FIFO, a socket, a device, an unreadable file): a folder scan skips them
and lists them, like non-image files (`Dataset.ignored`, with the reason in its notes);
a CSV row naming one is refused, naming the row. Nothing ever opens them (a FIFO would
block the read forever).
"""

from __future__ import annotations

import csv
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import pandas as pd

from leukaug.core.errors import DataError
from leukaug.data.images import is_image_file

Row = dict[str, object]
_REAL_FOLDERS: ContextVar[dict[str, str] | None] = ContextVar("real_folders", default=None)


@contextmanager
def real_folders_remembered() -> Iterator[None]:
    """Within, `real_path` resolves each folder once: a data set has few folders and many
    files, and resolving every file's full path again is most of the cost of reading it."""
    token = _REAL_FOLDERS.set({})
    try:
        yield
    finally:
        _REAL_FOLDERS.reset(token)


def real_path(path: str | os.PathLike[str]) -> str:
    """`os.path.realpath(path)`; inside `real_folders_remembered`, a path that is no link
    is its folder's (remembered) real path joined with its name, which is the same thing."""
    path = os.path.abspath(path)
    remembered = _REAL_FOLDERS.get()
    if remembered is None or os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    real_folder = remembered.get(folder)
    if real_folder is None:
        real_folder = remembered[folder] = os.path.realpath(folder)
    return os.path.join(real_folder, name) if name else real_folder


def odd_reason(path: Path) -> str | None:
    """Why `path` cannot be read as an image file, or None for a regular readable file or a
    folder: 'a symbolic link loop', 'a broken symbolic link', 'a FIFO (named pipe)',
    'a socket', 'a device', 'unreadable (<why>)'. Never opens the file."""
    try:
        mode = path.stat().st_mode  # follows links
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop"
        if error.errno == errno.ENOENT and path.is_symlink():
            return "a broken symbolic link"
        return f"unreadable ({error.strerror or error})"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISREG(mode) and not os.access(path, os.R_OK):
        return "unreadable (permission denied)"
    return None


def check_inside_root(path: Path, root: Path, resolved: str | None = None) -> None:
    """Raise `DataError` when `path` (under `root` by name) resolves outside `root`
    (`resolved`: `real_path(path)` when the caller has it).

    The message names the first symbolic link on the way that leads out, and its target.
    """
    real_root = real_path(root)
    real = resolved if resolved is not None else real_path(path)
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return
    real_root = Path(real_root)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink() and not current.resolve().is_relative_to(real_root):
            raise DataError(
                f"{current}: a symbolic link to {os.readlink(current)} (resolved: "
                f"{current.resolve()}), outside the data root {real_root}. "
                "Fix: copy the files into the data root, or link only to places inside it."
            )
    raise DataError(
        f"{path}: resolves to {path.resolve()}, outside the data root {real_root}. "
        "Fix: keep every image inside the data root."
    )


def list_images(
    folder: Path, ignored: list[Path], recursive: bool = False, *, root: Path | None = None
) -> list[Path]:
    """Image files in `folder`, sorted; other files go to `ignored`.

    With a data `root`, symbolic links are followed when they stay inside it and refused
    otherwise; without one, every link is followed. A folder linking to one that contains
    it (a loop) is refused.
    """
    if root is not None:
        check_inside_root(folder, root)
    images: list[Path] = []
    _scan(folder, root, ignored, images, recursive, (folder.resolve(),))
    return sorted(images)


def _scan(
    folder: Path,
    root: Path | None,
    ignored: list[Path],
    images: list[Path],
    recursive: bool,
    ancestors: tuple[Path, ...],
) -> None:
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise DataError(
            f"{folder}: cannot list the folder ({error.strerror or error}). "
            "Fix: make it readable (chmod u+rx), or move it out of the data root."
        ) from None
    for entry in entries:
        if odd_reason(entry) is not None:  # never followed nor opened; listed as ignored
            ignored.append(entry)
            continue
        if root is not None and entry.is_symlink() and (entry.is_dir() or is_image_file(entry)):
            check_inside_root(entry, root)
        if entry.is_dir():
            if not recursive:
                continue
            target = entry.resolve()
            if target in ancestors:
                raise DataError(
                    f"{entry}: a symbolic link to {target}, a folder that contains it (a loop). "
                    "Fix: remove the link."
                )
            _scan(entry, root, ignored, images, recursive, (*ancestors, target))
        elif entry.is_file():
            (images if is_image_file(entry) else ignored).append(entry)


def resolve_inside(root: Path, name: str, where: str) -> Path:
    """`root / name` resolved, refusing absolute names, `../` escapes and links leading out."""
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")):
        raise DataError(
            f"{where}: {name!r} is an absolute path. "
            f"Fix: write paths relative to the data root {root}."
        )
    lexical = Path(os.path.normpath(root / candidate))
    if not lexical.is_relative_to(root):
        raise DataError(
            f"{where}: {name!r} points outside the data root {root}. "
            "Fix: keep every image inside the data root and write its path relative to it."
        )
    odd = odd_reason(lexical) if os.path.lexists(lexical) else None
    if odd is not None:
        raise DataError(
            f"{where}: {name!r} is {odd}, not an image file. "
            "Fix: replace it with the image file, or remove the row."
        )
    real = real_path(lexical)
    try:
        check_inside_root(lexical, root, real)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    return Path(real)


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
    """A CSV with all cells as strings; every row must have as many fields as the header.

    Raises `DataError` naming the file (and the line) when it is unreadable, a row is
    longer or shorter than the header, or `required` columns are missing.
    """
    if not path.is_file():
        raise DataError(f"{path}: the CSV file does not exist. Fix: check the path.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            records = []
            for cells in reader:
                if not cells:
                    continue  # a blank line
                if len(cells) != len(header):
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(cells)} fields, the header "
                        f"{len(header)}. Fix: give every row one value per column "
                        "(quote values that contain commas)."
                    )
                records.append(cells)
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(
            f"{path}: cannot parse the CSV ({error}). "
            "Fix: write it as plain comma-separated UTF-8 text."
        ) from None
    if header is None:
        raise DataError(f"{path}: the CSV file is empty. Fix: write a header line and rows.")
    columns = [cell.strip() for cell in header]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}. "
            f"Fix: the header must include {', '.join(required)}."
        )
    if not records:
        raise DataError(f"{path}: the CSV has a header but no rows. Fix: list at least one image.")
    return pd.DataFrame(records, columns=columns, dtype=str)


def make_row(root: Path, path: Path, label: int, subject: str, source_split: str, fold: int) -> Row:
    """One manifest row; refuses a `path` that resolves outside `root` (a link leading out)."""
    real = real_path(path)
    check_inside_root(path, root, real)
    return {
        "image_id": path.relative_to(root).as_posix(),
        "path": real,
        "label": label,
        "subject": subject,
        "source_split": source_split,
        "fold": fold,
    }
