"""``OUT/verdicts.md``: the summary as Markdown tables, for a README, an issue or a pull request."""

from __future__ import annotations

from typing import Any

from bnlab.report.page import _number, _percent


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
            f"{verdict} ({row['claims_held']}/{row['claims_total']} claims) |"
        )
    lines += [
        "",
        "## Predictions beside measurements",
        "",
        "| Experiment | Claim | Quantity | Predicted | Measured | Rel. error | Verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for exp in summary["experiments"]:
        for c in exp["claims"]:
            verdict = "holds" if c["holds"] else "**does not hold**"
            claim, quantity = (c[k].replace("|", "/") for k in ("claim", "quantity"))
            lines.append(
                f"| {exp['name']} | {claim} | {quantity} | {_number(c['predicted'])} | {_number(c['measured'])} | "
                f"{_percent(c['rel_error'])} | {verdict} |"
            )
    return "\n".join(lines) + "\n"
