"""``OUT/verdicts.md``: the summary as Markdown tables, for a README, an issue or a pull request."""

from __future__ import annotations

from typing import Any

from bnlab.report.page import _percent, measured_text, predicted_text


def render_markdown(summary: dict[str, Any]) -> str:
    """The paper's summary table with a verdict per row, then every prediction beside its measurement."""
    lines = [
        f"# Verdicts: `bnlab reproduce --profile {summary.get('profile') or '?'}`",
        "",
        f"Generated {summary['generated']} from `summary.json`; the figures are in `report.html`.",
        "",
        "| Claim | GD | BNGD | Experiments | Verdict |",
        "|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        verdict = "reproduced" if row["reproduced"] else "**not reproduced**"
        lines.append(
            f"| {row['row']} | {row['gd']} | {row['bngd']} | {', '.join(row['experiments'])} | "
            f"{verdict} ({row['claims_held']}/{row['claims_total']} claims)"
            + (f": {row['note'].split('. ')[0].lower()} |" if row.get("note") else " |")
        )
    notes = [f"- **{row['row']}**: {row['note']}" for row in summary["rows"] if row.get("note")]
    lines += ["", *notes] if notes else []
    lines += [
        "",
        "## Predictions beside measurements",
        "",
        "| Experiment | Claim | Quantity | Predicted | Measured [95% CI] | Rel. error | Verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for exp in summary["experiments"]:
        for c in exp["claims"]:
            verdict = "holds" if c["holds"] else "**does not hold**"
            claim, quantity, predicted, measured = (
                _cell(text) for text in (c["claim"], c["quantity"], predicted_text(c), measured_text(c))
            )
            lines.append(
                f"| {exp['name']} | `{c['id']}` {claim} | {quantity} | {predicted} | {measured} | "
                f"{_percent(c['rel_error'])} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text for a table cell: a literal ``|`` escaped (so ``||w||`` stays ``||w||``, not a column break)."""
    return text.replace("|", "\\|")
