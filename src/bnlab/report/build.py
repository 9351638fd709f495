"""Write the report of a set of runs: ``OUT/report.html`` (self-contained), ``OUT/summary.json`` and
``OUT/verdicts.md``.

``rebuild_report(OUT)`` redoes both from the stored runs alone (``load_outcome``: claims and figures from the
stored tables, nothing recomputed): the runs listed in the previous ``summary.json``, or else the latest complete
run of each experiment found under OUT.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bnlab.errors import BnlabError
from bnlab.experiments.base import REGISTRY
from bnlab.experiments.runner import Outcome, load_outcome
from bnlab.report.markdown import render_markdown
from bnlab.report.page import render_page
from bnlab.report.summary import report_summary
from bnlab.sweep import ResultStore, RunStore
from bnlab.sweep.store import write_json_atomic, write_text_atomic

REPORT_HTML = "report.html"
SUMMARY_JSON = "summary.json"
VERDICTS_MD = "verdicts.md"


def build_report(out: str | Path, outcomes: Sequence[Outcome], profile: str | None = None) -> tuple[Path, Path]:
    """Write the page, the JSON summary and the Markdown verdicts for ``outcomes`` under ``out``; return the
    page's and the summary's paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = report_summary(outcomes, profile)
    json_path, html_path = out / SUMMARY_JSON, out / REPORT_HTML
    write_json_atomic(json_path, summary)
    write_text_atomic(out / VERDICTS_MD, render_markdown(summary))
    write_text_atomic(html_path, render_page(summary, outcomes))
    return html_path, json_path


def collect_outcomes(out: str | Path, run_ids: Sequence[str] = ()) -> tuple[list[Outcome], str | None]:
    """The outcomes (re-summarised and re-plotted from stored tables) that the report of ``out`` shows: the runs
    ``run_ids`` (ids or unambiguous prefixes) if given."""
    out = Path(out)
    previous = out / SUMMARY_JSON
    stores: list[RunStore] = [ResultStore(out).find(i) for i in run_ids]
    profile = None
    if previous.exists() and not stores:
        data = json.loads(previous.read_text())
        profile = data.get("profile")
        for exp in data.get("experiments", []):
            path = Path(exp["path"])
            if not path.is_absolute() or not path.exists():
                path = out / exp["name"] / exp["run_id"]
            if (path / "config.json").exists():
                stores.append(RunStore(path, json.loads((path / "config.json").read_text())))
    if not stores:
        latest: dict[str, RunStore] = {}
        for store in ResultStore(out).runs():
            if store.complete and store.path.parent.name in REGISTRY:
                latest[store.path.parent.name] = store  # runs() is oldest first
        order = list(REGISTRY)
        stores = sorted(latest.values(), key=lambda s: order.index(s.path.parent.name))
    if not stores:
        raise BnlabError(f"no complete runs under {out}: run 'bnlab reproduce --out {out}' first")
    incomplete = [str(s.path) for s in stores if not s.complete]
    if incomplete:
        raise BnlabError(f"runs not complete (run them again to resume): {', '.join(incomplete)}")
    return [load_outcome(s) for s in stores], profile


def rebuild_report(out: str | Path, run_ids: Sequence[str] = ()) -> tuple[list[Outcome], Path, Path]:
    """Rebuild ``report.html`` and ``summary.json`` under ``out`` from stored results only."""
    outcomes, profile = collect_outcomes(out, run_ids)
    html_path, json_path = build_report(out, outcomes, profile)
    return outcomes, html_path, json_path
