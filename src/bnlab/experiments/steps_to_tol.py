"""Steps to tolerance over an eps grid for GD and BNGD from the same ``w0``, and their learning-rate windows
(``bnlab.experiments.windows``): shared by ``lr-robustness`` (O5) and ``dimension`` (O6)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bnlab.experiments.windows import steps_window
from bnlab.ols import Problem, bngd, gd, theory

FACTORS = (2.0, 10.0)


def gd_predicted_width(problem: Problem, factor: float, points: int = 200_001) -> float:
    """GD's ``factor``-window from F1 alone: steps to a fixed tolerance scale as ``1 / -log rho(eps)``,
    so the window is where ``-log rho(eps) >= -log rho_opt / factor``, evaluated on a fine grid up to
    ``2 / lambda_max``."""
    eps = np.geomspace(theory.gd_optimal_eps(problem) * 1e-4, theory.gd_threshold(problem), points)[:-1]
    speed = -np.log(theory.gd_rate(problem, eps))
    ok = eps[speed >= speed.max() / factor]
    return float(np.log10(ok.max() / ok.min()))


def steps_frame(
    problem: Problem, eps: np.ndarray, steps: int, tol: float, w0_norm: str, seed: int, **kw
) -> pd.DataFrame:
    """Steps to reach ``gap <= tol * gap_0`` (``inf`` if not within ``steps``) for GD and BNGD (``eps_a`` in
    ``kw``, default 1) over ``eps``, from the same ``w0`` (drawn from ``seed``)."""
    device = kw.get("device", "cpu")
    common = {"seed": seed, "w0_norm": w0_norm, "record_every": 1, "device": device}
    frames = []
    for method, traj in (
        ("gd", gd(problem, eps, steps, **common)),
        ("bngd", bngd(problem, eps, steps, eps_a=kw.get("eps_a", 1.0), compile=kw.get("compile", "auto"), **common)),
    ):
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "eps": eps,
                    "steps_to_tol": theory.steps_to_tolerance(traj.steps, traj.excess_loss, tol),
                    "final_rel_gap": traj.excess_loss[-1] / traj.excess_loss[0],
                    "diverged": traj.diverged,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def widths_table(steps_table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per ``keys + [method, seed]`` group: the 2x and 10x window ``width_*`` and ``span_*`` (decades),
    the window's outer ends ``lo_*``, ``hi_*``, and the best eps and its steps."""
    rows = []
    for group, frame in steps_table.groupby([*keys, "method", "seed"], sort=True):
        row = dict(zip([*keys, "method", "seed"], group, strict=True))
        eps, steps = frame.eps.to_numpy(), frame.steps_to_tol.to_numpy()
        finite = np.isfinite(steps)
        row["best_steps"] = float(steps[finite].min()) if finite.any() else float("nan")
        row["best_eps"] = float(eps[finite][np.argmin(steps[finite])]) if finite.any() else float("nan")
        for f in FACTORS:
            window = steps_window(eps, steps, f)
            row[f"width_{f:g}x"], row[f"span_{f:g}x"] = window.width, window.span
            row[f"lo_{f:g}x"], row[f"hi_{f:g}x"] = window.lo, window.hi
        rows.append(row)
    return pd.DataFrame(rows)
