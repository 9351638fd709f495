"""Learning-rate robustness as a number: the width, in decades, of the eps set that stays near the best.

Given steps-to-tolerance ``S(eps)`` on a geometric eps grid, with ``S* = min S``, the ``F``-window is the set of
eps with ``S(eps) <= F S*``. On the grid it is a union of runs of consecutive points; each run's ends are placed
where ``log S`` crosses ``log(F S*)``, by linear interpolation in ``log eps`` with the first point outside, or
half a grid step out where that point never reaches the tolerance (``S = inf``: a cliff, such as GD's at
``2 / lambda_max``). The error is then at most half a grid step per end.

- ``width``: the total length of the runs, ``sum log10(eps_hi / eps_lo)`` (the measure of the window);
- ``span``: from the lowest to the highest end, ``log10(max eps_hi / min eps_lo)``, bridging gaps.

They differ only where S has a bump above ``F S*`` between good values: BNGD has one, around the eps where
its effective step first overshoots the stability edge and ``||w||`` must grow before it converges.

Shared by ``lr-robustness`` (O5) and ``dimension`` (O6), which also share the chunk that measures ``S(eps)``
for GD and BNGD on one problem.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bnlab.ols import Problem, bngd, gd, theory

FACTORS = (2.0, 10.0)


def window_runs(eps: np.ndarray, steps: np.ndarray, factor: float) -> list[tuple[float, float]]:
    """``[(eps_lo, eps_hi), ...]`` of the runs of the ``factor``-window, ascending (empty if nothing converged)."""
    eps = np.asarray(eps, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.float64)
    order = np.argsort(eps)
    eps, steps = eps[order], steps[order]
    finite = np.isfinite(steps)
    if not finite.any():
        return []
    best = float(steps[finite].min())
    level = np.log(factor * best)
    inside = finite & (steps <= factor * best)
    # Run boundaries: where ``inside`` switches on (starts) and off (ends, inclusive).
    padded = np.concatenate([[False], inside, [False]]).astype(int)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1) - 1
    log_eps = np.log10(eps)
    return [
        (10 ** _edge(log_eps, steps, lo, lo - 1, level), 10 ** _edge(log_eps, steps, hi, hi + 1, level))
        for lo, hi in zip(starts, ends, strict=True)
    ]


def _edge(log_eps: np.ndarray, steps: np.ndarray, last_in: int, first_out: int, level: float) -> float:
    if first_out < 0 or first_out >= len(log_eps):
        return float(log_eps[last_in])  # the window reaches the end of the grid
    if not np.isfinite(steps[first_out]):
        return float((log_eps[last_in] + log_eps[first_out]) / 2)  # a cliff: half a grid step out
    s_in, s_out = np.log(steps[last_in]), np.log(steps[first_out])
    t = (level - s_in) / (s_out - s_in) if s_out != s_in else 0.0
    return float(log_eps[last_in] + t * (log_eps[first_out] - log_eps[last_in]))


def window_width(eps: np.ndarray, steps: np.ndarray, factor: float) -> float:
    """Total width in decades of the ``factor``-window (NaN if nothing converged)."""
    runs = window_runs(eps, steps, factor)
    return float(sum(np.log10(hi / lo) for lo, hi in runs)) if runs else float("nan")


def window_span(eps: np.ndarray, steps: np.ndarray, factor: float) -> float:
    """Decades from the lowest to the highest eps of the ``factor``-window (NaN if nothing converged)."""
    runs = window_runs(eps, steps, factor)
    return float(np.log10(runs[-1][1] / runs[0][0])) if runs else float("nan")


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
            runs = window_runs(eps, steps, f)
            row[f"width_{f:g}x"] = window_width(eps, steps, f)
            row[f"span_{f:g}x"] = window_span(eps, steps, f)
            row[f"lo_{f:g}x"] = runs[0][0] if runs else float("nan")
            row[f"hi_{f:g}x"] = runs[-1][1] if runs else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
