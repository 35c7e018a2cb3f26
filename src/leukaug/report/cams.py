"""Where the models look, in the report: every CNN arm's Grad-CAM artefacts (`cam.csv`,
`cam_overlays.png`, written at the end of the arm by `leukaug.arm.kinds`) become one figure
per arm and one number per arm, the mean share of the CAM's mass on the cell over the
explained test cells (all seeds). An arm below `LOW_FOREGROUND_SHARE` looks mostly at the
background and is flagged."""

from __future__ import annotations

import pandas as pd

from leukaug.arm.background_check import FILLS
from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.data.regions import LOW_FOREGROUND_SHARE
from leukaug.report.background import COLUMNS as BACKGROUND_COLUMNS
from leukaug.report.background import background_note_text, check_finding, drop_cell, row_flag
from leukaug.report.html import FigureEntry
from leukaug.report.tables import DASH, Table, number
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


def cam_table(summary: pd.DataFrame, background: pd.DataFrame | None = None) -> Table | None:
    """'Table N. Where the models look', or None when no arm has CAMs or a background check;
    with `background` (`report.background.background_summary`) each arm's AUC drop with its
    background replaced stands beside its CAM share."""
    background = pd.DataFrame(columns=BACKGROUND_COLUMNS) if background is None else background
    if summary.empty and background.empty:
        return None
    merged = summary.merge(background, on="name", how="outer", suffixes=("", "_check"), sort=False)
    order = {name: k for k, name in enumerate([*summary["name"], *background["name"]])}
    merged = merged.sort_values("name", key=lambda names: names.map(order), kind="stable")
    checked = not background.empty
    rows = []
    for row in merged.to_dict("records"):
        flags = []
        if row_flag(row.get("flagged")):
            flags.append("looks mostly at the background")
        if row_flag(row.get("flagged_check")):
            flags.append("depends on the background")
        seeds = row.get("seeds")
        cells = [
            str(row["name"]),
            _count(row.get("seeds_check") if seeds is None or pd.isna(seeds) else seeds),
            _count(row.get("cells")) if pd.notna(row.get("mean_foreground_share")) else DASH,
            number(row.get("mean_foreground_share"), 3),
        ]
        if checked:
            cells += [drop_cell(row, fill) or number(row.get(f"drop_{fill}"), 3) for fill in FILLS]
        rows.append([*cells, "; ".join(flags)])
    header = ["Arm", "Seeds", "Cells", "Share on cell"]
    header += [f"AUC drop, {fill} background" for fill in FILLS] if checked else []
    notes = [
        f"Up to 64 test cells per seed (16 of each class x correct/wrong); an arm below "
        f"{LOW_FOREGROUND_SHARE} is flagged. A bagged arm's share is its members' on their "
        "own regions. Arms without a network (cell features) have no CAM."
    ]
    if checked:
        notes.append(background_note_text())
    return Table(
        "cam",
        "Where the models look: Grad-CAM's share of its mass on the cell (the cell mask: the "
        "non-black pixels, or the stained cell on a smear), mean over the explained test cells "
        "of every seed"
        + (", and the test AUC lost when the background is replaced." if checked else "."),
        [*header, "Flag"],
        rows,
        notes=notes,
        text_columns=1,
    )


def _count(value: object) -> str:
    return DASH if value is None or pd.isna(value) else str(int(value))  # type: ignore[arg-type]


def cam_notes(summary: pd.DataFrame, background: pd.DataFrame | None = None) -> list[str]:
    """One note per flagged arm, or one for several arms with the same finding; with
    `background` (`report.background.background_summary`), what the background check found
    for them, which may disagree with their CAM."""
    checks = {} if background is None else {r["name"]: r for r in background.to_dict("records")}
    groups: dict[str, list[tuple[str, float]]] = {}
    for row in summary.itertuples(index=False):
        if row.flagged:
            finding = check_finding(checks[row.name]) if row.name in checks else ""
            groups.setdefault(finding, []).append((row.name, row.mean_foreground_share))
    notes = []
    for finding, arms in groups.items():
        if len(arms) == 1:
            ((name, share),) = arms
            note = (
                f"{name!r} looks mostly at the background: only {share:.3f} of its Grad-CAM "
                "mass lies on the cell (mean over the explained test cells); its accuracy may "
                "rest on the background or the frame rather than on the cell."
            )
        else:
            listed = [f"{name!r} ({share:.3f})" for name, share in arms]
            note = (
                f"{', '.join(listed[:-1])} and {listed[-1]} look mostly at the background: "
                f"less than {LOW_FOREGROUND_SHARE} of their Grad-CAM mass (in brackets, mean over "
                "the explained test cells) lies on the cell; their accuracy may rest on the "
                "background or the frame rather than on the cell."
            )
        notes.append(f"{note} {finding}".strip())
    return notes


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
