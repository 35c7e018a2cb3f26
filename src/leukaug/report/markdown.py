"""summary.md: the answer, the paper-style tables and the notes, in Markdown."""

from __future__ import annotations

from pathlib import Path

from leukaug.report.html import ReportContent, numbered
from leukaug.report.tables import Table

ANSWER_HEADING = "## The answer"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = [f"**{_cell(table.caption)}**", ""]
    lines.append("| " + " | ".join(_cell(h) for h in table.header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|")
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows)
    lines.extend(["", *[f"_{_cell(n)}_" for n in table.notes]])
    return "\n".join(lines)


def render_markdown(content: ReportContent, summary_tables: list[Table]) -> str:
    """The Markdown summary (a subset of the HTML report, numbered as the page is)."""
    content = numbered(content)
    by_key = {table.key: table for table in content.tables}
    summary_tables = [by_key.get(table.key, table) for table in summary_tables]
    parts = [
        f"# {content.title}",
        "",
        f"Generated {content.generated} by leukaug. Full report: `report.html`.",
        "",
    ]
    if content.synthetic:
        parts += [
            "> **SYNTHETIC DATA.** These results come from computer-generated cell images, not from "
            "patients; they say nothing about real leukaemia.",
            "",
        ]
    parts += [ANSWER_HEADING, "", *[line + "\n" for line in content.headline]]
    if content.verdict_table is not None:
        parts += [markdown_table(content.verdict_table), ""]
    if content.notes:
        parts += ["## Notes", "", *[f"- {note}" for note in content.notes], ""]
    if content.failed or content.incomplete:
        parts += ["## Failed arms", ""]
        parts += [
            f"- `{f.get('arm_id', '')}` ({f.get('name', '')}): {f.get('error_type', '')}: {f.get('message', '')}"
            for f in content.failed
        ]
        parts += [f"- `{arm_id}`: incomplete (not finished)" for arm_id in content.incomplete]
        parts.append("")
    parts += ["## Tables", ""]
    for table in summary_tables:
        parts += [markdown_table(table), ""]
    parts += [
        "Every metric per arm and split: `metrics.csv`; every comparison: `comparisons.csv`; figures: `figures/`.",
        "",
    ]
    return "\n".join(parts)


def read_headline(summary_path: str | Path) -> str:
    """The answer paragraphs of a summary.md (what the CLI prints)."""
    lines = Path(summary_path).read_text(encoding="utf-8").splitlines()
    if ANSWER_HEADING not in lines:
        return ""
    out = [
        line.lstrip("> ").replace("**", "") for line in lines if line.startswith("> **SYNTHETIC")
    ]
    for line in lines[lines.index(ANSWER_HEADING) + 1 :]:
        if line.startswith(("#", "**", "|")):
            break
        if line.strip():
            out.append(line.strip())
    return "\n".join(out)
