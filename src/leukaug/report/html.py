"""One self-contained HTML page from Jinja2 templates: inline CSS, figures as base64 PNG, no
external reference. Autoescaping is on, so every string from data (arm names, errors, config)
is escaped by the template engine.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import jinja2

from leukaug.report import numbering
from leukaug.report.describe import arm_settings, counts_table, dataset_lines, plain
from leukaug.report.tables import Table

TEMPLATE = "report.html.j2"
# The page keeps the study-level answer in view and folds per-arm detail (`<details>`, the
# caption is the line to click): a table stays open only when it is one of these and has at
# most FOLD_ROWS rows; a figure only when it is one of OPEN_FIGURES.
OPEN_TABLES = frozenset({"verdicts", "table1", "table5", "dataset-counts", "failed"})
FOLD_ROWS = 12
OPEN_FIGURES = frozenset({"roc_curves", "forest"})
STACK_COLUMNS = 4  # a table of more columns is stacked row by row in a narrow window


@dataclass
class FigureEntry:
    """A figure for the page: PNG bytes, or None when not available (then the reason shows)."""

    key: str
    title: str
    caption: str
    png: bytes | None
    missing: str = "not available"
    display_scale: float = (
        0.58  # CSS px per PNG px: leukaug saves at 200 dpi, shown at ~115 px/inch
    )


@dataclass
class ReportContent:
    """Everything the page shows, already computed. Table and figure numbers in captions are
    reassigned in page order when rendered (see `numbered`)."""

    title: str
    generated: str
    synthetic: bool
    headline: list[str]
    verdict_table: Table | None
    notes: list[str]
    tables: list[Table]
    figures: list[FigureEntry]
    dataset: dict[str, Any] | None
    study_toml: str | None
    specs: dict[str, Any]
    versions: dict[str, str]
    failed: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


def numbered(content: ReportContent) -> ReportContent:
    """A copy with tables and figures numbered 1, 2, ... in page order and the text's
    references to them following, so a dropped table or figure leaves no gap."""
    moved = {
        **numbering.renames([t.caption for t in content.tables], "Table"),
        **numbering.renames([f.title for f in content.figures], "Figure"),
    }

    def follow(lines: list[str]) -> list[str]:
        return [numbering.follow(line, moved) for line in lines]

    def table(t: Table, label: str | None = None) -> Table:
        caption = numbering.numbered(t.caption, label, moved) if label else t.caption
        return dataclasses.replace(t, caption=caption, notes=follow(t.notes))

    return dataclasses.replace(
        content,
        headline=follow(content.headline),
        notes=follow(content.notes),
        methods=follow(content.methods),
        verdict_table=None if content.verdict_table is None else table(content.verdict_table),
        tables=[table(t, f"Table {k}") for k, t in enumerate(content.tables, start=1)],
        figures=[
            dataclasses.replace(
                f,
                title=numbering.numbered(f.title, f"Figure {k}", moved),
                caption=numbering.follow(f.caption, moved),
            )
            for k, f in enumerate(content.figures, start=1)
        ],
    )


@dataclass(frozen=True)
class FigureView:
    """What the template needs of one figure."""

    key: str
    title: str
    caption: str
    missing: str
    data: str | None  # base64 PNG
    width: int
    folded: bool = False


def _display_width(png: bytes, scale: float) -> int:
    """Display width in CSS pixels from the PNG header's width (CSS caps it at the page width)."""
    pixels = int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" else 1000
    return max(1, round(pixels * scale))


def figure_view(entry: FigureEntry) -> FigureView:
    """The figure as the page shows it: base64 PNG at its display width, or the reason it is
    missing; folded unless it is one of OPEN_FIGURES (or missing: one line either way)."""
    folded = entry.key not in OPEN_FIGURES and entry.png is not None
    if entry.png is None:
        return FigureView(entry.key, entry.title, entry.caption, entry.missing, None, 0, folded)
    data = base64.b64encode(entry.png).decode("ascii")
    width = _display_width(entry.png, entry.display_scale)
    return FigureView(entry.key, entry.title, entry.caption, entry.missing, data, width, folded)


def folded_tables(tables: list[Table]) -> set[str]:
    """Keys of the tables the page folds (per-arm detail; see OPEN_TABLES)."""
    return {t.key for t in tables if t.key not in OPEN_TABLES or len(t.rows) > FOLD_ROWS}


def failed_table(failed: list[dict[str, Any]], incomplete: list[str]) -> Table | None:
    """Arms that failed (error.json) or have no predictions yet; None when there are none."""
    if not failed and not incomplete:
        return None
    rows = [
        [
            str(f.get("arm_id", "")),
            str(f.get("name", "")),
            str(f.get("error_type", "")),
            str(f.get("message", "")),
        ]
        for f in failed
    ]
    rows += [
        [arm_id, "", "incomplete", "not finished (still running or interrupted)"]
        for arm_id in incomplete
    ]
    return Table(
        "failed",
        "Arms that failed or did not finish (excluded from every table and figure).",
        ["Arm id", "Name", "Error", "Message"],
        rows,
        text_columns=4,
    )


@functools.cache
def environment() -> jinja2.Environment:
    """The package's templates, autoescaped; an undefined name is an error, not blank text."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("leukaug", "report/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["STACK_COLUMNS"] = STACK_COLUMNS
    return env


def render_html(content: ReportContent) -> str:
    """The whole page as one string."""
    content = numbered(content)
    dataset = content.dataset or {}
    counts = counts_table(dataset.get("counts"))
    odd_counts = counts is None and dataset.get("counts") is not None
    page = environment().get_template(TEMPLATE)
    settings = arm_settings(content.specs)
    return page.render(
        c=content,
        failed=failed_table(content.failed, content.incomplete),
        figures=[figure_view(entry) for entry in content.figures],
        dataset_lines=dataset_lines(dataset) if content.dataset else None,
        counts=counts,
        counts_text=plain(dataset["counts"]) if odd_counts else None,
        settings=settings,
        folded=folded_tables(content.tables)
        | (
            {settings.differing.key}
            if settings and len(settings.differing.rows) > FOLD_ROWS
            else set()
        ),
    )
