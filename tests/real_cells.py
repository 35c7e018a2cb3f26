"""The 40 real C-NMC 2019 cells of ../shared/real-cells/cnmc-samples, and the layouts tests
build from them (always copies in a temporary folder: never write into ../shared)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_CELLS_ENV = "LEUKAUG_REAL_CELLS"  # where a checkout without ../shared keeps them
ALL_SUBJECTS = {"1", "2", "3", "11", "13", "14", "15", "16", "17", "23", "53"}
HEM_SUBJECTS = {"H2", "H3", "H6", "H10", "H12"}
MISNAMED = {"UID_H10_100_1_hem.png", "UID_H10_100_3_hem.png", "UID_H10_103_3_hem.png",
            "UID_11_16_2_all.png"}  # fmt: skip
IMAGEFOLDER_TEST = {"1", "2", "11", "H2", "H10"}  # subjects put in test/


def real_cells_folder() -> Path | None:
    """../shared/real-cells/cnmc-samples beside the checkout, or $LEUKAUG_REAL_CELLS."""
    for candidate in (
        os.environ.get(REAL_CELLS_ENV),
        REPO.parent / "shared/real-cells/cnmc-samples",
    ):
        if candidate and (Path(candidate) / "all").is_dir():
            return Path(candidate)
    return None


def cells(real_cells: Path) -> list[tuple[Path, str]]:
    """(file, class folder name) of every real cell."""
    return [(p, name) for name in ("all", "hem") for p in sorted((real_cells / name).iterdir())]


def cnmc_subject(name: str) -> str:
    return name.split("_")[1].upper()


def kaggle_layout(real_cells: Path, root: Path) -> Path:
    """C-NMC_Leukemia/training_data/fold_0/{all,hem}/ (no test set)."""
    for path, name in cells(real_cells):
        target = root / "C-NMC_Leukemia/training_data/fold_0" / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return root / "C-NMC_Leukemia"


def class_folder_layout(real_cells: Path, root: Path) -> Path:
    """cells/{all,hem}/ (a folder per class, no test set)."""
    for path, name in cells(real_cells):
        (root / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / name / path.name)
    return root


def imagefolder_layout(real_cells: Path, root: Path) -> Path:
    """{train,test}/{all,hem}/, the IMAGEFOLDER_TEST subjects in test/."""
    for path, name in cells(real_cells):
        split = "test" if cnmc_subject(path.name) in IMAGEFOLDER_TEST else "train"
        (root / split / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / split / name / path.name)
    return root
