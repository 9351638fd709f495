"""The reproduction report: one self-contained HTML page and a JSON summary, built from stored results only."""

from bnlab.report.build import build_report, collect_outcomes, rebuild_report
from bnlab.report.summary import PAPER_TABLE, ROW_ORDER, report_summary, row_verdicts

__all__ = [
    "PAPER_TABLE",
    "ROW_ORDER",
    "build_report",
    "collect_outcomes",
    "rebuild_report",
    "report_summary",
    "row_verdicts",
]
