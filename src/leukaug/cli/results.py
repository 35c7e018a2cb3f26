"""What `leukaug run` shows at the end: the study's verdicts as a table (or JSON), and the
plan that `--dry-run` prints instead of running.

Arm names are shown without the parts every arm shares (`custom_cnn-flip_rotate-full` is
`flip_rotate` when every arm is a `custom_cnn-...-full`), and the table's title says what
was dropped, so the rows can be told apart on an 80-column terminal."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from leukaug.core.layout import StudyFolder

if TYPE_CHECKING:
    from leukaug.study.dry_run import StudyPreview

RESULT_COLUMNS = ("arm", "reference", "metric", "n_seeds", "effect", "ci_low", "ci_high")
RESULT_COLUMNS += ("p_adjusted", "verdict", "multiplicity")
# What the tables need besides their name columns (cells and borders): arm names are kept
# whole when the terminal is wide enough for them.
VERDICT_COLUMNS_WIDTH = 80
PLAN_COLUMNS_WIDTH = 60


def read_results(study_dir: Path) -> list[dict[str, Any]]:
    """One row per tested arm from the study's `verdicts.csv` (empty without one)."""
    import pandas as pd

    path = StudyFolder(Path(study_dir)).verdicts_csv
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


def shared_affixes(names: list[str]) -> tuple[str, str]:
    """The leading and trailing `-`-separated parts every name shares (each name keeps at
    least one part of its own): ("custom_cnn-", "-full") for custom_cnn-*-full arms."""
    parts = [name.split("-") for name in dict.fromkeys(names)]
    if len(parts) < 2:
        return "", ""
    shortest = min(len(p) for p in parts)
    lead = 0
    while lead < shortest - 1 and len({p[lead] for p in parts}) == 1:
        lead += 1
    trail = 0
    while trail < shortest - 1 - lead and len({p[-1 - trail] for p in parts}) == 1:
        trail += 1
    prefix = "-".join(parts[0][:lead]) + "-" if lead else ""
    suffix = "-" + "-".join(parts[0][len(parts[0]) - trail :]) if trail else ""
    return prefix, suffix


class ShortNames:
    """Names without their shared prefix and suffix, and the note that says so; names kept
    whole when `fits` (the table fits the terminal with them)."""

    def __init__(self, names: list[str], *, fits: bool = False) -> None:
        self.prefix, self.suffix = ("", "") if fits else shared_affixes(names)

    def __call__(self, name: str | None) -> str:
        if name is None:
            return "-"
        short = name.removeprefix(self.prefix) if self.prefix else name
        return short.removesuffix(self.suffix) if self.suffix else short

    @property
    def note(self) -> str:
        """ "" or "; names without the shared 'custom_cnn-' and '-full'"."""
        dropped = [f"'{part}'" for part in (self.prefix, self.suffix) if part]
        return f"; arm names without the shared {' and '.join(dropped)}" if dropped else ""


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def fits(names: list[str], times: int, other_columns: int, width: int | None) -> bool:
    """Whether a table with `times` columns of these names and `other_columns` characters
    of other cells and borders fits `width` (None: an unknown width, so not)."""
    longest = max((len(name) for name in names), default=0)
    return width is not None and times * (longest + 3) + other_columns <= width


def results_table(rows: list[dict[str, Any]], width: int | None = None) -> Table:
    """arm, its reference, seeds, the primary metric's difference with its CI, the verdict."""
    metric = rows[0].get("metric", "metric") if rows else "metric"
    rule = "max-t" if rows and rows[0].get("multiplicity") == "maxt" else "Holm"
    names = [str(row.get(key)) for row in rows for key in ("arm", "reference")]
    short = ShortNames(names, fits=fits(names, 2, VERDICT_COLUMNS_WIDTH, width))
    table = Table(
        title=f"Verdicts (primary metric: {metric}; difference from the reference{short.note})",
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
            short(str(row.get("arm"))),
            short(str(row.get("reference"))),
            str(row.get("n_seeds", "-")),
            interval,
            "-" if p_value is None else f"{p_value:.3g}",
            f"[{style}]{verdict}[/]" if style else verdict,
        )
    return table


def preview_table(preview: StudyPreview, width: int | None = None) -> Table:
    """`--dry-run`: one row per arm with its reference, its time estimate, and whether it is
    already complete or needs ImageNet weights fetched first."""
    names = [arm.arm_id for arm in preview.arms]
    short = ShortNames(names, fits=fits(names, 2, PLAN_COLUMNS_WIDTH, width))
    models = {arm.model for arm in preview.arms}
    if all(short(arm.arm_id).startswith(arm.model) for arm in preview.arms):
        models = {"shown in the arm's name"}
    title = f"{preview.name}: {len(preview.arms)} arm(s) into {preview.out_dir}{short.note}"
    table = Table(title=title)
    table.add_column("arm", overflow="fold")  # names are the answer: never truncated
    if len(models) > 1:
        table.add_column("model", overflow="fold")
    for column in ("px", "epochs", "time"):
        table.add_column(column, justify="right")
    table.add_column("compared with", overflow="fold")
    table.add_column("status")
    for arm in preview.arms:
        reference = arm.reference
        shown = (
            short(f"{reference}-s{arm.seed}").removesuffix(f"-s{arm.seed}") if reference else None
        )
        reference_text = shown or preview.untested.get(arm.name, "- (a reference)")
        status = "complete (skipped)" if arm.complete else "to run"
        if arm.fetch_weights and not arm.complete:
            status = "needs weights"  # the fetch command is listed below the table
        if arm.depends_on:
            status += f", after {short(arm.depends_on)}"
        cells = [short(arm.arm_id)] + ([arm.model] if len(models) > 1 else [])
        cells += [str(arm.image_size), str(arm.epochs), duration(arm.estimate_seconds)]
        table.add_row(*cells, reference_text, status)
    return table


def duration(seconds: float | None) -> str:
    """'-', '40 s', '12 min' or '3.4 h'."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
    lines.append(estimate_line(preview))
    fetch = sorted({arm.fetch_weights for arm in preview.arms if arm.fetch_weights})
    if fetch:
        needing = sum(1 for arm in preview.arms if arm.fetch_weights)
        lines.append(
            f"weights: {needing} arm(s) start from ImageNet weights not cached on this machine; "
            "on a machine with internet access run: " + "; ".join(fetch)
        )
    return lines + [f"note: {note}" for note in preview.notes]


def estimate_line(preview: StudyPreview) -> str:
    """The total time estimate and where the per-arm estimates come from."""
    work = preview.work
    todo = [arm for arm in preview.arms if not arm.complete]
    if not todo:
        return "time: nothing to run"
    sources = sorted({arm.estimate_source for arm in todo if arm.estimate_source})
    total = work.get("estimated_seconds")
    if total is None:
        return "time: no estimate (arms without a network are not timed: they take seconds)"
    at_once = work.get("arms_at_once", 1)
    parallel = f", {at_once} arms at once" if at_once > 1 else ""
    bound = "; measured steps leave out augmentation and data loading: a lower bound"
    return (
        f"time: about {duration(total)} in total{parallel} (per arm from "
        f"{' and '.join(sources)}{bound if work.get('estimate_is_lower_bound') else ''})"
    )
