"""`read_dataset`: any supported layout on disk -> a validated, labelled, subject-aware manifest.

Layouts, auto-detected in this order: `csv` (`path,label[,subject][,split]`, when
`labels_csv` is given), `cnmc_kaggle` and `cnmc_tcia`, `imagefolder` (split folders
`ROOT/{train,test[,val]}/{CLASS}/`), `folders` (one folder per class). The class-folder
layouts need `positive_class` unless the folders are named `all` and `hem`.
Images are found and decoded by content (`data.images`), so a file's suffix may lie.
Every image's header is read first, so a file declaring more than `max_pixels` pixels
(a decompression bomb) is refused by name before any image is decoded. Then every image
is fully decoded once, so a truncated file fails now with its path, not in the middle of
a study; its size and mode are recorded for the report. With a `check_record`
(data/checked.py), images unchanged since they last passed are not checked again.
Folder paths resolve once per read (`real_folders_remembered`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leukaug.core.errors import DataError
from leukaug.data import cnmc, folders
from leukaug.data.cache import RESIZE_POLICY, file_digest, remember_digest
from leukaug.data.checked import ImageFacts, read_record, write_record
from leukaug.data.choices import IMAGEFOLDER, LAYOUTS
from leukaug.data.files import odd_reason, real_folders_remembered
from leukaug.data.images import CONVERSION_RULES, MAX_PIXELS, check_pixels, misnamed, open_rgb
from leukaug.data.synth_config import MARKER_FILE

MANIFEST_COLUMNS = ["image_id", "path", "label", "subject", "source_split", "fold"]


@dataclass
class Dataset:
    """A data set read from disk. `manifest` follows ARCHITECTURE.md; the rest is for reports."""

    root: Path
    layout: str
    manifest: pd.DataFrame
    ignored: list[str] = field(default_factory=list)  # non-image files skipped, relative to root
    conversions: dict[str, int] = field(default_factory=dict)  # original mode -> count (non-RGB)
    modes: dict[str, int] = field(default_factory=dict)  # original mode -> count (all)
    sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)


def detect_layout(
    root: Path, positive_class: str | None = None, labels_csv: str | Path | None = None
) -> tuple[Path, str]:
    """(data root, layout name) for `root`; raises `DataError` with the expected layouts."""
    if labels_csv is not None:
        return root, "csv"
    found = cnmc.detect(root)
    if found is not None:
        return found
    subfolders = folders.class_folders(root)
    splits = folders.split_folders(root)
    if splits:
        others = [p.name for p in subfolders if p not in splits.values()]
        if others:
            raise DataError(
                f"{root}: cannot tell the layout: split folders "
                f"({', '.join(p.name for p in splits.values())}) beside other folders "
                f"({', '.join(others)}). Fix: for an ImageFolder layout keep only "
                "train/, test/ and val/ (each with the class folders); for one folder per "
                "class, rename the class folders."
            )
        return root, IMAGEFOLDER
    if subfolders:
        return root, "folders"
    raise DataError(
        f"{root}: cannot tell the layout (no folders in it). Expected one of: the Kaggle "
        "C-NMC folder (C-NMC_Leukemia/ with training_data/ and validation_data/), the TCIA "
        "release (C-NMC_training_data/, C-NMC_test_prelim_phase_data/), ImageFolder split "
        "folders (train/CLASS/, test/CLASS/, val/ optional), one folder per class (with "
        "--positive-class NAME unless they are all/ and hem/), or a CSV of "
        "path,label[,subject][,split] (pass --labels-csv FILE)."
    )


def read_dataset(
    root: str | Path,
    layout: str = "auto",
    positive_class: str | None = None,
    labels_csv: str | Path | None = None,
    check_images: bool = True,
    max_pixels: int = MAX_PIXELS,
    check_record: Path | None = None,
) -> Dataset:
    """Read and validate a data set.

    Every image's header is checked against `max_pixels` before anything is decoded;
    `check_images=False` then skips the full decode (faster, less safe). `check_record`:
    the file remembering which images passed (data/checked.py), read and rewritten.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: folder not found. Fix: check the path to the data set.")
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}. Fix: use one of {', '.join(LAYOUTS)}.")
    if layout == "auto":
        data_root, layout = detect_layout(root, positive_class, labels_csv)
    elif layout in (cnmc.KAGGLE, cnmc.TCIA):
        found = cnmc.detect(root)
        data_root = found[0] if found else root
    else:
        data_root = root

    ignored: list[Path] = []
    with real_folders_remembered():  # each folder resolves once, not every image's path
        if layout == cnmc.KAGGLE:
            rows, notes = cnmc.read_kaggle(data_root, ignored)
        elif layout == cnmc.TCIA:
            rows, notes = cnmc.read_tcia(data_root, ignored)
        elif layout == "folders":
            rows, notes = folders.read_class_folders(data_root, positive_class, ignored)
        elif layout == IMAGEFOLDER:
            rows, notes = folders.read_image_folder(data_root, positive_class, ignored)
        else:
            if labels_csv is None:
                raise DataError("layout 'csv' needs a CSV file. Fix: pass --labels-csv FILE.")
            csv_path = Path(labels_csv).expanduser()
            csv_path = csv_path if csv_path.is_absolute() else root / csv_path
            rows, notes = folders.read_csv_list(data_root, csv_path.resolve())

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest = manifest.astype({"label": "int64", "fold": "int64"})
    manifest = manifest.sort_values("image_id", kind="stable").reset_index(drop=True)
    check_manifest(manifest)
    dataset = Dataset(
        root=data_root,
        layout=layout,
        manifest=manifest,
        ignored=sorted(_relative(p, data_root) for p in ignored),
        synthetic=(data_root / MARKER_FILE).is_file() or (root / MARKER_FILE).is_file(),
        notes=notes,
    )
    odd = [(p, reason) for p in ignored if (reason := odd_reason(p)) is not None]
    if len(odd) < len(ignored):
        plain = sorted(_relative(p, data_root) for p in ignored if odd_reason(p) is None)
        dataset.notes.append(f"{len(plain)} non-image file(s) ignored: {', '.join(plain[:5])}")
    if odd:
        listed = ", ".join(f"{_relative(p, data_root)} ({reason})" for p, reason in odd[:5])
        more = f" and {len(odd) - 5} more (see dataset.json's `ignored`)" if len(odd) > 5 else ""
        dataset.notes.append(
            f"{len(odd)} file(s) that are no readable file skipped: {listed}{more}. "
            "Fix: replace them with the image files, or remove them."
        )
    paths = list(manifest["path"])
    facts, identities = read_record(check_record, paths) if check_record else ({}, {})
    fresh = [path for path in paths if path not in facts]
    for path, known in facts.items():  # the image cache's key needs no second read
        size, mtime_ns = identities[path][:2]
        remember_digest(path, size, mtime_ns, known.digest)
    for path in fresh:  # headers only: nothing is decoded before all are checked
        check_pixels(path, max_pixels)
    wrong_suffix = {p: facts[p].misnamed if p in facts else misnamed(Path(p)) for p in paths}
    _note_misnamed(dataset, wrong_suffix)
    if check_images:
        for path in fresh:
            image, mode = open_rgb(path, max_pixels)
            size = f"{image.shape[1]}x{image.shape[0]}"
            facts[path] = ImageFacts(mode, size, wrong_suffix[path], file_digest(path))
        _note_decoded(dataset, [facts[path] for path in paths])
        if check_record is not None:
            write_record(check_record, identities, facts)
    return dataset


def _note_misnamed(dataset: Dataset, wrong_suffix: dict[str, str | None]) -> None:
    """A note for images whose suffix names another format (read by content all the same)."""
    found = [(Path(p), real) for p, real in wrong_suffix.items() if real is not None]
    if found:
        shown = ", ".join(f"{path.name} is {real}" for path, real in found[:3])
        dataset.notes.append(
            f"{len(found)} image(s) named as another format ({shown}{' ...' if len(found) > 3 else ''}); "
            "each is read by its content."
        )


def check_manifest(manifest: pd.DataFrame) -> None:
    """Raise `DataError` for duplicate ids, labels outside {0, 1}, or a subject with both labels."""
    if list(manifest.columns[: len(MANIFEST_COLUMNS)]) != MANIFEST_COLUMNS:
        raise DataError(
            f"manifest columns are {list(manifest.columns)}; expected {MANIFEST_COLUMNS}."
        )
    duplicated = manifest["image_id"][manifest["image_id"].duplicated()]
    if not duplicated.empty:
        raise DataError(
            f"duplicate image {duplicated.iloc[0]!r} in the manifest. Fix: list every image once."
        )
    bad = manifest[~manifest["label"].isin([0, 1])]
    if not bad.empty:
        raise DataError(f"{bad['path'].iloc[0]}: label {bad['label'].iloc[0]} is not 0 or 1.")
    labels_per_subject = manifest.groupby("subject")["label"].nunique()
    mixed = labels_per_subject[labels_per_subject > 1]
    if not mixed.empty:
        subject = mixed.index[0]
        rows = manifest[manifest["subject"] == subject]
        example = {label: rows.loc[rows["label"] == label, "path"].iloc[0] for label in (0, 1)}
        raise DataError(
            f"subject {subject!r} appears with both labels (ALL: {example[1]}; HEM: {example[0]}). "
            "One patient is either leukemic or healthy. Fix: correct the labels or subject ids "
            f"({len(mixed)} subject(s) affected)."
        )


def _note_decoded(dataset: Dataset, facts: list[ImageFacts]) -> None:
    """Modes, sizes and conversions found by the full decode, with their notes."""
    modes = Counter(fact.mode for fact in facts)
    sizes = Counter(fact.size for fact in facts)
    dataset.modes = dict(sorted(modes.items()))
    dataset.sizes = dict(sorted(sizes.items()))
    dataset.conversions = {m: n for m, n in dataset.modes.items() if CONVERSION_RULES[m] != "none"}
    for mode, count in dataset.conversions.items():
        dataset.notes.append(f"{count} image(s) in mode {mode}: {CONVERSION_RULES[mode]}")
    if len(dataset.sizes) > 1 or any(w != h for w, h in (s.split("x") for s in dataset.sizes)):
        non_square = sum(n for s, n in dataset.sizes.items() if len(set(s.split("x"))) > 1)
        dataset.notes.append(
            f"{len(dataset.sizes)} image size(s), {non_square} image(s) not square: {RESIZE_POLICY}"
        )


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root`; a link that does not resolve (a loop, a broken link) by
    its own name."""
    try:
        named = path.absolute() if path.is_symlink() and odd_reason(path) else path.resolve()
        return named.relative_to(root).as_posix()
    except ValueError:
        return str(path)
