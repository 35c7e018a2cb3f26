"""The background check in the report: every checked arm's `background_check.csv` (written
after the arm by `leukaug.trained.arm_background`) becomes one row per arm name, the test
AUC as it is and with the background outside the cell replaced, mean over seeds. An arm
whose AUC drops by more than `BACKGROUND_DROP` for either fill is flagged: its predictions
depend on the background, not only on the cell. A fill that did not change the background
(it already was that colour: black on C-NMC's segmented cells) tested nothing; its drop is
shown as "untested", and the CAM notes say that the check could not test the arm."""

from __future__ import annotations

import pandas as pd

from leukaug.arm.background_check import (
    BACKGROUND_CHECK_CSV,
    BACKGROUND_DROP,
    FILLS,
    UNCHANGED_LEVELS,
    changed_the_background,
)
from leukaug.core.layout import StudyFolder
from leukaug.stats.study_results import Study

COLUMNS = [
    "name",
    "seeds",
    "cells",
    "no_cell",
    "auc_original",
    *(f"drop_{fill}" for fill in FILLS),
    *(f"tested_{fill}" for fill in FILLS),
    "flagged",
]
UNTESTED = "untested"  # a fill that left the background as it was


def background_summary(study: Study) -> pd.DataFrame:
    """One row per arm name with a background check: seeds, cells (per seed), cells with no
    cell found, mean test AUC, mean AUC drop per fill, whether each fill changed the
    background in every seed (tested_*), flagged (a tested fill's drop > BACKGROUND_DROP)."""
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
        checks = checks.assign(tested=changed_the_background(checks))
        drops = checks.groupby("fill")["drop"].mean()
        tested = checks.groupby("fill")["tested"].all()
        row = {
            "name": name,
            "seeds": len(tables),
            "cells": int(checks["cells"].max()),
            "no_cell": int(checks["no_cell"].max()),
            "auc_original": float(checks["auc_original"].mean()),
        }
        row |= {f"drop_{fill}": float(drops.get(fill, float("nan"))) for fill in FILLS}
        row |= {f"tested_{fill}": bool(tested.get(fill, False)) for fill in FILLS}
        row["flagged"] = bool(((drops > BACKGROUND_DROP) & tested).any())
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


def row_flag(value: object) -> bool | None:
    """A boolean of a summary row (possibly outer-merged): None when missing."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return bool(value)


def drop_cell(row: dict, fill: str) -> str | None:
    """The table's text for a fill that tested nothing (`UNTESTED`), else None (a number)."""
    return UNTESTED if row_flag(row.get(f"tested_{fill}")) is False else None


def check_finding(row: dict) -> str:
    """What the background check says of one arm, for the CAM note of a flagged arm."""
    tested = [fill for fill in FILLS if row_flag(row.get(f"tested_{fill}"))]
    if not tested:
        return (
            "The background check cannot test this here: its fills did not change these "
            "cells' background (it already is the fill colour, e.g. uniform black)."
        )
    if row_flag(row.get("flagged")):
        return "The background check confirms it (below)."
    largest = max(abs(float(row[f"drop_{fill}"])) for fill in tested)
    return (
        "The background check finds no such dependence: replacing the background "
        f"({', '.join(tested)} fill) changed its test AUC by at most {largest:.3f}."
    )


def background_note_text() -> str:
    """How the check works, for the table's notes."""
    return (
        "AUC drop: test AUC minus the test AUC with every pixel outside the cell mask replaced "
        "by the test cells' median background colour, or by black (mean over seeds; "
        "background_check.csv per arm). An arm whose drop exceeds "
        f"{BACKGROUND_DROP} for either fill is flagged: its predictions depend on the "
        f"background. {UNTESTED.capitalize()}: the fill moved the background by less than "
        f"{UNCHANGED_LEVELS:g} grey levels on average (it already was that colour), so its "
        "drop says nothing. Cells where no cell was found are left out of both AUCs. Bagged "
        "arms are not checked."
    )
