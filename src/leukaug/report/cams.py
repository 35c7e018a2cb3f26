"""Where the models look, in the report: every CNN arm's Grad-CAM artefacts (`cam.csv`,
`cam_overlays.png`, written at the end of the arm by `leukaug.arm.kinds`) become one figure
per arm and one number per arm, the mean share of the CAM's mass on the cell over the
explained test cells (all seeds). An arm below `LOW_FOREGROUND_SHARE` looks mostly at the
background and is flagged."""

from __future__ import annotations

import pandas as pd

from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.data.regions import LOW_FOREGROUND_SHARE
from leukaug.report.html import FigureEntry
from leukaug.report.tables import Table, number
from leukaug.stats.study_results import Study

CAM_FIGURE_SCALE = 0.75  # CSS px per PNG px: the overlays are saved at 110 dpi


def _folder(study: Study, arm_id: str) -> ArmFolder:
    return StudyFolder(study.directory).arm(arm_id)


def cam_summary(study: Study) -> pd.DataFrame:
    """One row per arm name with CAMs: seeds, cells, mean foreground share, flagged."""
    rows = []
    for name in study.names():
        tables = [
            pd.read_csv(_folder(study, arm.arm_id).cam_csv)
            for arm in study.arms_named(name)
            if _folder(study, arm.arm_id).cam_csv.is_file()
        ]
        if not tables:
            continue
        shares = pd.concat(tables, ignore_index=True)["foreground_share"].dropna()
        mean = float(shares.mean()) if len(shares) else float("nan")
        rows.append(
            {
                "name": name,
                "seeds": len(tables),
                "cells": len(shares),
                "mean_foreground_share": mean,
                "flagged": bool(mean < LOW_FOREGROUND_SHARE),
            }
        )
    columns = ["name", "seeds", "cells", "mean_foreground_share", "flagged"]
    return pd.DataFrame(rows, columns=columns)


def cam_table(summary: pd.DataFrame) -> Table | None:
    """'Table N. Where the models look', or None when no arm has CAMs."""
    if summary.empty:
        return None
    rows = [
        [
            str(row.name),
            str(row.seeds),
            str(row.cells),
            number(row.mean_foreground_share, 3),
            "looks mostly at the background" if row.flagged else "",
        ]
        for row in summary.itertuples(index=False)
    ]
    return Table(
        "cam",
        "Where the models look: Grad-CAM's share of its mass on the cell (the non-black "
        "pixels), mean over the explained test cells of every seed.",
        ["Arm", "Seeds", "Cells", "Share on cell", "Flag"],
        rows,
        notes=[
            f"Up to 64 test cells per seed (16 of each class x correct/wrong); an arm below "
            f"{LOW_FOREGROUND_SHARE} is flagged. A bagged arm's share is its members' on their "
            "own regions. Arms without a network (cell features) have no CAM."
        ],
        text_columns=1,
    )


def cam_notes(summary: pd.DataFrame) -> list[str]:
    """One note per flagged arm."""
    return [
        f"{row.name!r} looks mostly at the background: only {row.mean_foreground_share:.2f} of its "
        "Grad-CAM mass lies on the cell (mean over the explained test cells); its accuracy may "
        "rest on the background or the frame rather than on the cell."
        for row in summary.itertuples(index=False)
        if row.flagged
    ]


def cam_figures(study: Study) -> list[FigureEntry]:
    """One figure per arm name with overlays: its first seed's `cam_overlays.png`."""
    entries = []
    for name in study.names():
        for arm in study.arms_named(name):
            path = _folder(study, arm.arm_id).cam_overlays
            if path.is_file():
                entries.append(
                    FigureEntry(
                        f"cam_{name}",
                        f"Where {name} looks",
                        f"Grad-CAM of arm {arm.arm_id} on test cells: rows ALL correct, ALL "
                        "wrong, HEM correct, HEM wrong; each pair is the cell and its CAM (red: "
                        "where the evidence for the predicted class lies), with P(ALL) and the "
                        f"CAM's share on the cell. File: arms/{arm.arm_id}/{path.name}.",
                        path.read_bytes(),
                        display_scale=CAM_FIGURE_SCALE,
                    )
                )
                break
    return entries
