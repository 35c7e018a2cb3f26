"""The study and arm folders as code: every file name of their contracts (ARCHITECTURE.md).

Everything that reads or writes a study folder or an arm folder asks these classes for
the paths, so a file name is spelled once. `ArmFolder.is_complete()` is the one rule for
"this arm finished": `arm.json` says `complete` and every result file is there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukaug.core import atomic

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
# Stopped by a full disk or an unwritable folder: resumes from last.pt like a killed run.
STATUS_INTERRUPTED = "interrupted"
RESUMABLE_STATUSES = (STATUS_RUNNING, STATUS_INTERRUPTED)


@dataclass(frozen=True)
class ArmFolder:
    """One arm's folder, `arms/<arm_id>/`."""

    path: Path

    @property
    def arm_id(self) -> str:
        return self.path.name

    @property
    def arm_json(self) -> Path:
        """Resolved spec, config hash, status, times, device, versions."""
        return self.path / "arm.json"

    @property
    def history(self) -> Path:
        """One row per epoch (`train.HISTORY_COLUMNS`)."""
        return self.path / "history.csv"

    @property
    def predictions(self) -> Path:
        """split,image_id,subject,label,prob for val and test."""
        return self.path / "predictions.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def checkpoint(self) -> Path:
        """The weights of the epoch with the lowest validation loss."""
        return self.path / "checkpoint.pt"

    @property
    def last(self) -> Path:
        """The resume state after the latest epoch."""
        return self.path / "last.pt"

    @property
    def error(self) -> Path:
        """Written by the study when the arm failed."""
        return self.path / "error.json"

    @property
    def background_check_csv(self) -> Path:
        """The background check: the arm's test AUC with the background replaced."""
        return self.path / "background_check.csv"

    @property
    def cam_csv(self) -> Path:
        """Grad-CAM's share on the cell per explained test cell (CNN arms; arm_kinds.py)."""
        return self.path / "cam.csv"

    @property
    def cam_overlays(self) -> Path:
        """The explained test cells with their Grad-CAMs, by class and correctness."""
        return self.path / "cam_overlays.png"

    def result_files(self) -> tuple[Path, ...]:
        """The files a complete arm holds."""
        return (
            self.arm_json,
            self.history,
            self.predictions,
            self.metrics,
            self.checkpoint,
            self.last,
        )

    def read_info(self) -> dict[str, Any] | None:
        """`arm.json`, or None when the arm never started."""
        return atomic.read_json(self.arm_json)

    def is_complete(self) -> bool:
        """The one rule for "this arm finished": arm.json says `complete`, there is no
        error.json, and its predictions.csv exists. The other files are not required:
        checkpoints may be deleted to save space once an arm is done."""
        info = self.read_info()
        return (
            info is not None
            and info.get("status") == STATUS_COMPLETE
            and not self.error.exists()
            and self.predictions.is_file()
        )

    def remove_interrupted_writes(self) -> None:
        """Delete temporary files a killed process left (see `StudyFolder.remove_interrupted_writes`)."""
        remove_interrupted_writes(self.path)


@dataclass(frozen=True)
class StudyFolder:
    """A study's folder: `study.toml`, `dataset.json`, `arms/`, the report's files."""

    path: Path

    @property
    def study_toml(self) -> Path:
        """The resolved study (running it again into this folder resumes)."""
        return self.path / "study.toml"

    @property
    def dataset_json(self) -> Path:
        """Data root, layout, synthetic flag, split, counts, split fingerprint."""
        return self.path / "dataset.json"

    @property
    def arms_dir(self) -> Path:
        return self.path / "arms"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def sample_cells_figure(self) -> Path:
        """Figure 1, rendered by the study before the report."""
        return self.figures / "sample_cells.png"

    @property
    def augmented_cells_figure(self) -> Path:
        """Figure 2, rendered by the study before the report."""
        return self.figures / "augmented_cells.png"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def metrics_by_name_csv(self) -> Path:
        return self.path / "metrics_by_name.csv"

    @property
    def comparisons_csv(self) -> Path:
        return self.path / "comparisons.csv"

    @property
    def verdicts_csv(self) -> Path:
        """The primary analysis: one verdict per tested arm (`stats.verdicts`)."""
        return self.path / "verdicts.csv"

    @property
    def out_of_fold_csv(self) -> Path:
        """Cross-validation: every arm x seed's out-of-fold prediction of every image."""
        return self.path / "out_of_fold.csv"

    @property
    def fold_metrics_csv(self) -> Path:
        """Cross-validation: the primary metric per arm, seed and fold, and pooled."""
        return self.path / "fold_metrics.csv"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    @property
    def report_inputs(self) -> Path:
        """A fingerprint of what the report was built from, and its files: a rerun that
        changed none of them keeps the report (`leukaug.study.run.report`)."""
        return self.path / "report_inputs.json"

    def arm(self, arm_id: str) -> ArmFolder:
        return ArmFolder(self.arms_dir / arm_id)

    def arm_folders(self) -> Iterator[ArmFolder]:
        """Every arm folder present, sorted by arm id."""
        if self.arms_dir.is_dir():
            for path in sorted(p for p in self.arms_dir.iterdir() if p.is_dir()):
                yield ArmFolder(path)

    def has_arms(self) -> bool:
        return any(True for _ in self.arm_folders())

    def remove_interrupted_writes(self) -> None:
        """Temporary files a killed process left in the study folder and its figures."""
        for folder in (self.path, self.figures):
            remove_interrupted_writes(folder)


def remove_interrupted_writes(folder: Path) -> None:
    """Delete temporary files that a killed process left (`leukaug.core.atomic` names them
    `.<name>.<random>.tmp`; the finished file is never one of them)."""
    if folder.is_dir():
        for path in folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)
