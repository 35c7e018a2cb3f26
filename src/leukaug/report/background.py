"""The background check in the report: every checked arm's `background_check.csv` (written
after the arm by `leukaug.trained.arm_background`) becomes one row per arm name, the test
AUC as it is and with the background outside the cell replaced, mean over seeds. An arm
whose AUC drops by more than `BACKGROUND_DROP` for either fill is flagged: its predictions
depend on the background, not only on the cell."""

from __future__ import annotations

import pandas as pd

from leukaug.arm.background_check import BACKGROUND_CHECK_CSV, BACKGROUND_DROP, FILLS
from leukaug.core.layout import StudyFolder
from leukaug.stats.study_results import Study

COLUMNS = [
    "name",
    "seeds",
    "cells",
    "no_cell",
    "auc_original",
    *(f"drop_{fill}" for fill in FILLS),
    "flagged",
]


def background_summary(study: Study) -> pd.DataFrame:
    """One row per arm name with a background check: seeds, cells (per seed), cells with no
    cell found, mean test AUC, mean AUC drop per fill, flagged (any drop > BACKGROUND_DROP)."""
    rows = []
    for name in study.names():
        tables = []
        for arm in study.arms_named(name):
            path = StudyFolder(study.directory).arm(arm.arm_id).path / BACKGROUND_CHECK_CSV
            if path.is_file():
                tables.append(pd.read_csv(path))
        if not tables:
            continue
        checks = pd.concat(tables, ignore_index=True)
        drops = checks.groupby("fill")["drop"].mean()
        row = {
            "name": name,
            "seeds": len(tables),
            "cells": int(checks["cells"].max()),
            "no_cell": int(checks["no_cell"].max()),
            "auc_original": float(checks["auc_original"].mean()),
        }
        row |= {f"drop_{fill}": float(drops.get(fill, float("nan"))) for fill in FILLS}
        row["flagged"] = bool((drops > BACKGROUND_DROP).any())
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def background_notes(summary: pd.DataFrame) -> list[str]:
    """One note per flagged arm, with its numbers and the threshold."""
    notes = []
    for row in summary.itertuples(index=False):
        if not row.flagged:
            continue
        drops = ", ".join(f"{getattr(row, f'drop_{fill}'):+.3f} ({fill} fill)" for fill in FILLS)
        notes.append(
            f"{row.name!r} depends on the background: its test AUC {row.auc_original:.3f} drops "
            f"by {drops} when everything outside the cell is replaced (flagged above a drop of "
            f"{BACKGROUND_DROP}); part of its accuracy rests on the smear, the red cells or the "
            "tint, not on the white cell."
        )
    return notes


def background_note_text() -> str:
    """How the check works, for the table's notes."""
    return (
        "AUC drop: test AUC minus the test AUC with every pixel outside the cell mask replaced "
        "by the test cells' median background colour, or by black (mean over seeds; "
        "background_check.csv per arm). An arm whose drop exceeds "
        f"{BACKGROUND_DROP} for either fill is flagged: its predictions depend on the "
        "background. Cells where no cell was found are left out of both AUCs. Bagged arms "
        "are not checked."
    )
