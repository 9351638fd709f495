"""Steps to tolerance over an eps grid for GD and BNGD from the same ``w0``, and their learning-rate windows
(``bnlab.experiments.windows``): shared by ``lr-robustness`` (O5) and ``dimension`` (O6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from bnlab.experiments.base import EpsGridConfig, SeedsConfig
from bnlab.experiments.problems import CompiledConfig, Norm
from bnlab.experiments.windows import best_level, steps_window
from bnlab.ols import Problem, bngd, gd, theory

FACTORS = (2.0, 10.0)


class StepsToTolConfig(CompiledConfig, EpsGridConfig, SeedsConfig):
    """The grid and budget of a steps-to-tolerance sweep."""

    num_eps: int = Field(73, ge=5)
    steps: int = Field(3000, ge=10)
    tol: float = Field(1e-6, gt=0, lt=1)
    eps_a: float = Field(1.0, gt=0)


def gd_predicted_width(problem: Problem, factor: float, points: int = 200_001) -> float:
    """GD's ``factor``-window from F1 alone: steps to a fixed tolerance scale as ``1 / -log rho(eps)``,
    so the window is where ``-log rho(eps) >= -log rho_opt / factor``, evaluated on a fine grid up to
    ``2 / lambda_max``."""
    eps = np.geomspace(theory.gd_optimal_eps(problem) * 1e-4, theory.gd_threshold(problem), points)[:-1]
    speed = -np.log(theory.gd_rate(problem, eps))
    ok = eps[speed >= speed.max() / factor]
    return float(np.log10(ok.max() / ok.min()))


def steps_frame(
    problem: Problem, cfg: StepsToTolConfig, seed: int, norm: Norm, steps: int | None = None, record_every: int = 1
) -> pd.DataFrame:
    """Steps to reach ``gap <= tol * gap_0`` (``inf`` if not within ``steps``, by default ``cfg.steps``, counted
    to the next multiple of ``record_every``) for GD and BNGD over the eps grid, from the same ``w0`` (seed
    ``seed``'s, normalised by ``norm``)."""
    eps, steps = cfg.eps_grid, cfg.steps if steps is None else steps
    frames = []
    for method, traj in (
        ("gd", gd(problem, eps, steps, **cfg.start(seed, norm, record_every=record_every))),
        ("bngd", bngd(problem, eps, steps, eps_a=cfg.eps_a, **cfg.bn_start(seed, norm, record_every=record_every))),
    ):
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "eps": eps,
                    "steps_to_tol": theory.steps_to_tolerance(traj.steps, traj.excess_loss, cfg.tol),
                    "final_rel_gap": traj.excess_loss[-1] / traj.excess_loss[0],
                    "diverged": traj.diverged,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def widths_table(steps_table: pd.DataFrame, keys: list[str], sustain: int = 1) -> pd.DataFrame:
    """One row per ``keys + [method, seed]`` group: the 2x and 10x window ``width_*`` and ``span_*`` (decades),
    the window's outer ends ``lo_*``, ``hi_*``, the best eps and its steps, and ``level_steps``, the fewest steps
    that ``sustain`` neighbouring eps all reach (the level the windows are measured from)."""
    rows = []
    for group, frame in steps_table.groupby([*keys, "method", "seed"], sort=True):
        row = dict(zip([*keys, "method", "seed"], group, strict=True))
        eps, steps = frame.eps.to_numpy(), frame.steps_to_tol.to_numpy()
        finite = np.isfinite(steps)
        row["best_steps"] = float(steps[finite].min()) if finite.any() else float("nan")
        row["best_eps"] = float(eps[finite][np.argmin(steps[finite])]) if finite.any() else float("nan")
        row["level_steps"] = float(best_level(steps[np.argsort(eps)], sustain))
        for f in FACTORS:
            window = steps_window(eps, steps, f, sustain)
            row[f"width_{f:g}x"], row[f"span_{f:g}x"] = window.width, window.span
            row[f"lo_{f:g}x"], row[f"hi_{f:g}x"] = window.lo, window.hi
        rows.append(row)
    return pd.DataFrame(rows)
