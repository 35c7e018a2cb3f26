"""The background check in the report (issue 19): the AUC drop per arm beside its CAM share,
and a flag with the threshold for an arm whose predictions depend on the background."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from leukaug.arm.background_check import BACKGROUND_CHECK_CSV, COLUMNS
from leukaug.core.layout import StudyFolder
from leukaug.report.background import background_notes, background_summary
from leukaug.report.cams import cam_summary, cam_table
from leukaug.report.tables import DASH
from leukaug.stats.study_results import ArmResults, Study


def planted(tmp_path: Path, drops: dict[str, list[float]], cams: set[str]) -> Study:
    """Arms whose background_check.csv hold the given drops (one seed each), with CAMs for
    the names in `cams`."""
    arms = []
    for name, (median, black) in drops.items():
        folder = StudyFolder(tmp_path).arm(f"{name}-s0")
        folder.path.mkdir(parents=True)
        rows = [
            [fill, 40, 1, 0.9, 0.9 - drop, drop]
            for fill, drop in (("median", median), ("black", black))
        ]
        pd.DataFrame(rows, columns=COLUMNS).to_csv(folder.path / BACKGROUND_CHECK_CSV, index=False)
        if name in cams:
            pd.DataFrame({"image_id": ["a", "b"], "label": 1, "prob": 0.9, "correct": True,
                          "foreground_share": [0.2, 0.3], "layer": "x",
                          "cell_mask": "found"}).to_csv(folder.cam_csv, index=False)  # fmt: skip
        arms.append(ArmResults(f"{name}-s0", name, 0, {}, pd.DataFrame(), None))
    return Study(tmp_path, arms)


def test_an_arm_that_reads_the_background_is_flagged_beside_its_cam_share(tmp_path):
    study = planted(tmp_path, {"shortcut": [0.01, 0.30], "honest": [0.0, 0.02]}, {"shortcut"})
    summary = background_summary(study).set_index("name")
    assert summary.loc["shortcut", "drop_black"] == pytest.approx(0.30)
    assert list(summary["flagged"]) == [True, False]
    (note,) = background_notes(background_summary(study))
    assert "'shortcut' depends on the background" in note and "+0.300 (black fill)" in note
    assert "above a drop of 0.05" in note
    table = cam_table(cam_summary(study), background_summary(study))
    assert table.header == ["Arm", "Seeds", "Cells", "Share on cell", "AUC drop, median background",
                            "AUC drop, black background", "Flag"]  # fmt: skip
    rows = {row[0]: row for row in table.rows}
    assert rows["shortcut"][3] == "0.250" and rows["shortcut"][5] == "0.300"
    assert rows["shortcut"][-1] == "looks mostly at the background; depends on the background"
    assert rows["honest"][2:4] == [DASH, DASH]  # no CAM: dashes
    assert rows["honest"][-1] == ""
    assert any("exceeds 0.05" in note for note in table.notes)


def test_no_checks_leave_the_cam_table_as_it_was(tmp_path):
    study = planted(tmp_path, {}, set())
    assert background_summary(study).empty and cam_table(cam_summary(study)) is None
