"""One self-contained HTML page: inline CSS, figures as base64 PNG, no external reference.

Every string that comes from data (arm names, errors, config) goes through `html.escape`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html import escape
from typing import Any

from leukaug.report.tables import Table


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
    """Everything the page shows, already computed."""

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


CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 1.5em auto;
       padding: 0 1em; color: #111; line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; } h2 { border-bottom: 2px solid #333; padding-bottom: 0.15em; margin-top: 1.8em; }
.meta { color: #555; margin-top: 0; }
.synthetic { border: 3px solid #b00020; background: #fdecee; color: #6b0010; padding: 0.8em 1em; font-size: 1.1em; margin: 1em 0; }
.answer { background: #eef4fb; border-left: 6px solid #1f5fa8; padding: 0.6em 1em; margin: 1em 0; }
.answer p { margin: 0.4em 0; font-size: 1.08em; }
.notes { background: #fff8e1; border-left: 6px solid #c98a00; padding: 0.5em 1em; }
table { border-collapse: collapse; margin: 0.6em 0 0.3em; font-size: 0.9em; }
.caption { font-weight: bold; margin: 1.2em 0 0; }
th, td { border-bottom: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th.l, td.l { text-align: left; }
thead th { border-bottom: 2px solid #333; }
.tablenote { font-size: 0.85em; color: #444; margin: 0.2em 0 1.2em; max-width: 1100px; }
figure { margin: 1.2em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; max-width: 1100px; }
.missing { color: #777; font-style: italic; border: 1px dashed #aaa; padding: 1em; }
pre { background: #f5f5f5; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.better { color: #0a6b2b; font-weight: bold; } .worse { color: #b00020; font-weight: bold; }
@media print { body { max-width: none; font-size: 11pt; } figure { break-inside: avoid; } h2 { break-after: avoid; } }
"""


def render_table(table: Table) -> str:
    """A <table> with its caption and notes; every cell escaped."""

    def cell(tag: str, k: int, text: str) -> str:
        align = ' class="l"' if k < table.text_columns else ""
        return f"<{tag}{align}>{escape(text)}</{tag}>"

    head = "".join(cell("th", k, h) for k, h in enumerate(table.header))
    body = "".join(
        "<tr>" + "".join(cell("td", k, c) for k, c in enumerate(row)) + "</tr>"
        for row in table.rows
    )
    notes = "".join(f'<p class="tablenote">{escape(n)}</p>' for n in table.notes)
    return (
        f'<p class="caption" id="caption-{escape(table.key)}">{escape(table.caption)}</p>'
        f'<table id="{escape(table.key)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}'
    )


def _display_width(png: bytes, scale: float) -> int:
    """Display width in CSS pixels from the PNG header's width (CSS caps it at the page width)."""
    pixels = int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" else 1000
    return max(1, round(pixels * scale))


def render_figure(entry: FigureEntry) -> str:
    """A <figure> with an embedded PNG, or a visible 'not available' box."""
    if entry.png is None:
        body = f'<div class="missing">{escape(entry.title)}: {escape(entry.missing)}.</div>'
    else:
        data = base64.b64encode(entry.png).decode("ascii")
        width = _display_width(entry.png, entry.display_scale)
        body = (
            f'<img alt="{escape(entry.title)}" width="{width}" src="data:image/png;base64,{data}">'
        )
    return (
        f'<figure id="fig-{escape(entry.key)}">{body}'
        f"<figcaption><b>{escape(entry.title)}.</b> {escape(entry.caption)}</figcaption></figure>"
    )


def _counts_rows(counts: Any) -> list[list[str]] | None:
    """Rows (split, class, images, subjects) from dataset.json's counts[split][class] = {...}."""
    if not isinstance(counts, dict):
        return None
    rows = []
    for split, classes in counts.items():
        if not isinstance(classes, dict):
            return None
        for name, numbers in classes.items():
            if not isinstance(numbers, dict):
                return None
            rows.append(
                [
                    str(split),
                    str(name),
                    str(numbers.get("images", "")),
                    str(numbers.get("subjects", "")),
                ]
            )
    return rows


def _dataset_section(dataset: dict[str, Any] | None) -> str:
    if not dataset:
        return "<p>No dataset.json in the study folder: the data set is not described.</p>"
    fields = {k: v for k, v in dataset.items() if k != "counts"}
    items = "".join(
        f"<li><b>{escape(str(k))}</b>: "
        f"{escape(json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else str(v))}</li>"
        for k, v in sorted(fields.items())
    )
    html = f"<ul>{items}</ul>"
    counts = dataset.get("counts")
    rows = _counts_rows(counts)
    if rows:
        header = ["Split", "Class", "Images", "Subjects"]
        caption = "Images and subjects per split and class."
        html += render_table(Table("dataset", caption, header, rows, text_columns=2))
    elif counts is not None:
        html += f"<pre>{escape(json.dumps(counts, indent=2, default=str))}</pre>"
    return html


def _failed_section(failed: list[dict[str, Any]], incomplete: list[str]) -> str:
    if not failed and not incomplete:
        return ""
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
        [arm_id, "", "incomplete", "no predictions.csv (still running or interrupted)"]
        for arm_id in incomplete
    ]
    table = Table(
        "failed",
        "Arms that failed or did not finish (excluded from every table and figure).",
        ["Arm id", "Name", "Error", "Message"],
        rows,
        text_columns=4,
    )
    return "<h2>Failed arms</h2>" + render_table(table)


def render_html(content: ReportContent) -> str:
    """The whole page as one string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(content.title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(content.title)}</h1>",
        f'<p class="meta">Generated {escape(content.generated)} by leukaug.</p>',
    ]
    if content.synthetic:
        parts.append(
            '<div class="synthetic" id="synthetic-warning"><b>SYNTHETIC DATA.</b> These results come from '
            "computer-generated cell images, not from patients. They test the pipeline only and say "
            "nothing about real leukaemia or about how these augmentations behave on real cells.</div>"
        )
    parts.append('<h2 id="answer">The answer</h2><div class="answer">')
    parts.extend(f"<p>{escape(line)}</p>" for line in content.headline)
    parts.append("</div>")
    if content.verdict_table is not None:
        parts.append(render_table(content.verdict_table))
    if content.notes:
        parts.append('<div class="notes" id="notes"><b>Notes</b><ul>')
        parts.extend(f"<li>{escape(note)}</li>" for note in content.notes)
        parts.append("</ul></div>")
    parts.append(_failed_section(content.failed, content.incomplete))
    parts.append('<h2 id="tables">Tables</h2>')
    parts.extend(render_table(table) for table in content.tables)
    parts.append('<h2 id="figures">Figures</h2>')
    parts.extend(render_figure(entry) for entry in content.figures)
    parts.append('<h2 id="methods">Methods</h2><ul>')
    parts.extend(f"<li>{escape(line)}</li>" for line in content.methods)
    parts.append("</ul>")
    parts.append('<h2 id="dataset">Data set</h2>')
    parts.append(_dataset_section(content.dataset))
    parts.append('<h2 id="configuration">Configuration</h2>')
    if content.study_toml is not None:
        parts.append(f"<h3>study.toml</h3><pre>{escape(content.study_toml)}</pre>")
    else:
        parts.append("<p>No study.toml in the study folder.</p>")
    for arm_id, spec in content.specs.items():
        parts.append(
            f"<h3>Arm {escape(arm_id)}</h3><pre>{escape(json.dumps(spec, indent=2, sort_keys=True, default=str))}</pre>"
        )
    parts.append('<h2 id="versions">Software versions</h2><ul>')
    parts.extend(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in content.versions.items())
    parts.append("</ul></body></html>")
    return "\n".join(p for p in parts if p)
