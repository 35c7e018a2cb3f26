"""The study report: metrics, comparisons and figures as HTML, Markdown and CSV."""

from leukaug.report.build import build_report

__all__ = ["build_report"]
