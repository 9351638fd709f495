"""The machine-readable summary: every experiment's claims, grouped under the paper's summary-table rows.

A row is *reproduced* when every claim of every experiment filed under it holds. Rows come in the paper's order;
rows no experiment names are left out, and rows the table does not know follow, in the order their first
experiment was given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from bnlab.experiments.runner import Outcome

ROW_ORDER = (
    "Convergence",
    "Convergence rate",
    "Robustness to learning rate",
    "Robustness to dimension",
    "Neural networks",
)

# The paper's summary table (GD vs BNGD), in its own terms.
PAPER_TABLE = {
    "Convergence": ("only for small eps (eps < 2/lambda_max)", "for any eps > 0, provided 0 < eps_a <= 1"),
    "Convergence rate": ("linear", "linear (can be faster: kappa* <= kappa)"),
    "Robustness to learning rate": ("small range of eps", "wide range of eps"),
    "Robustness to dimension": ("no effect", "the higher the better"),
    "Neural networks": (
        "plain network: good in a narrow range of learning rates, diverges at large ones",
        "BN network: good over a wider range, keeps training at large rates",
    ),
}


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def ordered_rows(outcomes: Sequence[Outcome]) -> list[str]:
    present = [o.experiment.row for o in outcomes]
    known = [r for r in ROW_ORDER if r in present]
    return known + [r for r in dict.fromkeys(present) if r not in ROW_ORDER]


def row_verdicts(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One entry per row: the paper's statement for GD and BNGD, the experiments, and the verdict."""
    rows = []
    for row in ordered_rows(outcomes):
        members = [o for o in outcomes if o.experiment.row == row]
        claims = [c for o in members for c in o.claims]
        held = sum(c.holds for c in claims)
        gd_text, bngd_text = PAPER_TABLE.get(row, ("-", "-"))
        rows.append(
            {
                "row": row,
                "gd": gd_text,
                "bngd": bngd_text,
                "experiments": [o.experiment.name for o in members],
                "claims_total": len(claims),
                "claims_held": held,
                "reproduced": held == len(claims),
                "failing": [f"{o.experiment.name}: {c.claim}" for o in members for c in o.claims if not c.holds],
                "note": " ".join(note(o.claims) for o in members if (note := getattr(o.experiment, "row_note", None))),
            }
        )
    return rows


def report_summary(outcomes: Sequence[Outcome], profile: str | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data."""
    experiments = []
    for o in outcomes:
        env = _read_env(o)
        experiments.append(
            {
                "name": o.experiment.name,
                "purpose": o.experiment.purpose,
                "row": o.experiment.row,
                "facts": list(o.experiment.facts),
                "run_id": o.store.run_id,
                "path": str(o.store.path),
                "config": o.config.identity(),
                "holds": o.holds,
                "claims": [{k: _finite(v) for k, v in c.to_dict().items()} for c in o.claims],
                "figures": [str(p) for p in o.figures],
                "environment": env,
            }
        )
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "all_reproduced": all(o.holds for o in outcomes),
        "rows": row_verdicts(outcomes),
        "experiments": experiments,
    }


def _read_env(outcome: Outcome) -> dict[str, Any]:
    try:
        return outcome.store.read_json("environment")
    except Exception:  # noqa: BLE001 - a run without its environment file still reports
        return {}
