"""What `leukaug run` shows at the end: the study's verdicts as a table (or JSON), and the
plan that `--dry-run` prints instead of running."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from leukaug.study.dry_run import StudyPreview

VERDICTS_CSV = "verdicts.csv"  # written by the report (leukaug.stats's primary analysis)
RESULT_COLUMNS = ("arm", "reference", "metric", "n_seeds", "effect", "ci_low", "ci_high")
RESULT_COLUMNS += ("p_adjusted", "verdict", "multiplicity")


def read_results(study_dir: Path) -> list[dict[str, Any]]:
    """One row per tested arm from the study's `verdicts.csv` (empty without one)."""
    import pandas as pd

    path = Path(study_dir) / VERDICTS_CSV
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    if frame.empty:
        return []
    rows = frame[[c for c in RESULT_COLUMNS if c in frame.columns]].to_dict("records")
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def results_table(rows: list[dict[str, Any]]) -> Table:
    """arm, its reference, seeds, the primary metric's difference with its CI, the verdict."""
    metric = rows[0].get("metric", "metric") if rows else "metric"
    rule = "max-t" if rows and rows[0].get("multiplicity") == "maxt" else "Holm"
    table = Table(
        title=f"Verdicts (primary metric: {metric}; difference from the reference)",
        caption=f"interval: at the level matching the {rule}-adjusted p (ci_level in verdicts.csv)",
    )
    for column in ("arm", "reference"):
        table.add_column(column, overflow="fold")  # names are the answer: never truncated
    p_column = f"p ({rule})"
    for column in ("seeds", f"{metric} difference [interval]", p_column):
        table.add_column(column, justify="right" if column in ("seeds", p_column) else "left")
    table.add_column("verdict")
    for row in rows:
        interval = f"{_number(row.get('effect'))} [{_number(row.get('ci_low'))}, {_number(row.get('ci_high'))}]"
        p_value = row.get("p_adjusted")
        verdict = str(row.get("verdict", ""))
        style = {"helps": "green", "hurts": "red"}.get(verdict, "")
        table.add_row(
            str(row.get("arm")),
            str(row.get("reference")),
            str(row.get("n_seeds", "-")),
            interval,
            "-" if p_value is None else f"{p_value:.3g}",
            f"[{style}]{verdict}[/]" if style else verdict,
        )
    return table


def preview_table(preview: StudyPreview) -> Table:
    """`--dry-run`: one row per arm with its reference and whether it is already complete."""
    table = Table(title=f"{preview.name}: {len(preview.arms)} arm(s) into {preview.out_dir}")
    for column in ("arm", "model", "px", "epochs", "compared with", "status"):
        table.add_column(column)
    for arm in preview.arms:
        reference = arm.reference or preview.untested.get(arm.name, "- (a reference)")
        status = "complete (skipped)" if arm.complete else "to run"
        if arm.depends_on:
            status += f", after {arm.depends_on}"
        table.add_row(
            arm.arm_id, arm.model, str(arm.image_size), str(arm.epochs), reference, status
        )
    return table


def preview_lines(preview: StudyPreview) -> list[str]:
    """The data and the work of a `--dry-run`, as plain sentences."""
    data, work = preview.data, preview.work
    images = data["images"]
    exact = "" if data.get("exact") else " (expected; generated on the first run)"
    lines = [
        f"data: {data['source']} -> {data['root']} ({data['layout']}), split {data['split']}: "
        f"{images['train']} train / {images['val']} val / {images['test']} test images{exact}",
        f"primary metric: {preview.primary_metric}; reference augmentation: {preview.baseline}",
        f"work: {work['arms_to_run']} of {work['arms']} arm(s) to run "
        f"({work['arms_complete']} already complete), {work['epochs']} epoch(s), "
        f"{work['training_image_passes']:,} training and {work['evaluation_image_passes']:,} "
        "evaluation image passes",
    ]
    return lines + [f"note: {note}" for note in preview.notes]
