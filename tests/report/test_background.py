"""The background check in the report (issue 19): the AUC drop per arm beside its CAM share,
and a flag with the threshold for an arm whose predictions depend on the background."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from leukaug.arm.background_check import BACKGROUND_CHECK_CSV, COLUMNS
from leukaug.core.layout import StudyFolder
from leukaug.report.background import UNTESTED, background_notes, background_summary
from leukaug.report.cams import cam_notes, cam_summary, cam_table
from leukaug.report.tables import DASH
from leukaug.stats.study_results import ArmResults, Study


def planted(
    tmp_path: Path, drops: dict[str, list[float]], cams: set[str], changed: float = 60.0
) -> Study:
    """Arms whose background_check.csv hold the given drops (one seed each), each fill
    having moved the background by `changed` grey levels, with CAMs for the names in `cams`."""
    arms = []
    for name, (median, black) in drops.items():
        folder = StudyFolder(tmp_path).arm(f"{name}-s0")
        folder.path.mkdir(parents=True)
        rows = [
            [fill, 40, 1, 0.9, 0.9 - drop, drop, changed]
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


def test_a_cam_flag_is_set_beside_what_the_background_check_found(tmp_path):
    """A low CAM share and a check that finds no dependence disagree: the note says both."""
    study = planted(tmp_path, {"honest": [0.004, -0.002]}, {"honest"})
    (note,) = cam_notes(cam_summary(study), background_summary(study))
    assert "'honest' looks mostly at the background" in note
    assert "finds no such dependence" in note and "at most 0.004" in note
    shortcut = planted(tmp_path / "b", {"shortcut": [0.01, 0.30]}, {"shortcut"})
    (note,) = cam_notes(cam_summary(shortcut), background_summary(shortcut))
    assert "confirms it" in note


def test_fills_that_left_the_background_as_it_was_tested_nothing(tmp_path):
    """On black backgrounds both fills are black: the drop is ~0 by construction. The
    report says "untested", flags nothing from it, and the CAM note says the check could
    not test the arm; a drop from an untested fill never flags."""
    study = planted(tmp_path, {"black": [0.0, 0.30]}, {"black"}, changed=0.6)
    summary = background_summary(study).set_index("name")
    assert not summary.loc["black", "flagged"]
    assert not summary.loc["black", "tested_median"] and not summary.loc["black", "tested_black"]
    rows = {row[0]: row for row in cam_table(cam_summary(study), background_summary(study)).rows}
    assert rows["black"][4:6] == [UNTESTED, UNTESTED]
    assert rows["black"][-1] == "looks mostly at the background"
    (note,) = cam_notes(cam_summary(study), background_summary(study))
    assert "cannot test this here" in note
    assert background_notes(background_summary(study)) == []


def test_a_check_written_before_changed_was_recorded_counts_as_tested(tmp_path):
    study = planted(tmp_path, {"old": [0.01, 0.30]}, set())
    path = StudyFolder(tmp_path).arm("old-s0").path / BACKGROUND_CHECK_CSV
    pd.read_csv(path).drop(columns="changed").to_csv(path, index=False)
    assert background_summary(study).set_index("name").loc["old", "flagged"]


def test_arms_with_the_same_finding_share_one_note(tmp_path):
    study = planted(tmp_path, {"a": [0.0, 0.0], "b": [0.0, 0.0]}, {"a", "b"}, changed=0.2)
    (note,) = cam_notes(cam_summary(study), background_summary(study))
    assert note.startswith("'a' (0.250) and 'b' (0.250) look mostly at the background")
    assert note.count("cannot test this here") == 1
