"""O1 / F1, F2: the loss gap after K steps against the learning rate, GD beside BNGD.

Claims: GD converges only for ``eps < 2 / lambda_max`` and diverges beyond; BNGD (``eps_a = 1``) never
diverges, whatever eps: after K steps its loss gap is below its start for every eps of the grid. (Reaching the
optimum at huge eps takes of the order of eps steps, since the effective step then falls like ``1 / eps``; so
after a fixed budget this experiment measures non-divergence, and says how many runs reached a tolerance.)
The GD threshold is measured by bracketing the eps where the gap after K steps stops shrinking, refined by
batched re-runs inside the bracket (no use of the predicted value).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from bnlab.experiments.base import EpsGridConfig, Experiment, RunContext, SeedsConfig, Tables, register
from bnlab.experiments.claims import Claim, below, close_to
from bnlab.experiments.plotting import BNGD_COLOUR, GD_COLOUR, THEORY_COLOUR, new_figure, save, seed_band, sentinel
from bnlab.experiments.problems import CompiledConfig, SpectrumConfig
from bnlab.ols import Problem, bngd, gd, theory

DIVERGED_DRAWN_AT = 1e3  # a diverged run's gap ratio, as drawn (its real value is inf or NaN)


class ConvergenceConfig(SpectrumConfig, CompiledConfig, EpsGridConfig, SeedsConfig):
    """Loss gap after K steps vs learning rate: GD diverges past 2/lambda_max, BNGD never does."""

    PROFILES = {
        "quick": {},
        "paper": {"num_eps": 241, "steps": 5000, "seeds": 5, "refine_points": 256, "refine_rounds": 3},
    }
    num_eps: int = Field(97, ge=3)
    eps_a: float = Field(1.0, gt=0)
    steps: int = Field(1000, ge=1)
    refine_points: int = Field(128, ge=8)
    refine_rounds: int = Field(2, ge=0)
    reached_tol: float = Field(1e-6, gt=0, lt=1)  # reported: how many BNGD runs got this far within the budget


def _final_gaps(cfg: ConvergenceConfig, seed: int) -> pd.DataFrame:
    problem = cfg.problem(seed)
    eps = cfg.eps_grid
    rows = []
    for method, traj in (
        ("gd", gd(problem, eps, cfg.steps, **cfg.start(seed, record_every=cfg.steps))),
        ("bngd", bngd(problem, eps, cfg.steps, eps_a=cfg.eps_a, **cfg.bn_start(seed, record_every=cfg.steps))),
    ):
        gap0, gap = traj.excess_loss[0], traj.excess_loss[-1]
        rows.append(pd.DataFrame({"method": method, "eps": eps, "rel_gap": gap / gap0, "diverged": traj.diverged}))
    frame = pd.concat(rows, ignore_index=True)
    frame["gd_threshold_measured"] = _measure_gd_threshold(problem, cfg, seed)
    frame["gd_threshold_predicted"] = theory.gd_threshold(problem)
    return frame


def _measure_gd_threshold(problem: Problem, cfg: ConvergenceConfig, seed: int) -> float:
    """The smallest eps at which GD's gap after K steps is not below its initial gap, bracketed on the
    sweep's grid and refined ``refine_rounds`` times on a geometric grid inside the bracket."""
    eps = cfg.eps_grid
    for _ in range(cfg.refine_rounds + 1):
        traj = gd(problem, eps, cfg.steps, **cfg.start(seed, record_every=cfg.steps))
        grows = traj.diverged | ~(traj.excess_loss[-1] < traj.excess_loss[0])
        if not grows.any() or grows[0]:
            return float("nan")  # no bracket inside the grid
        first = int(np.argmax(grows))
        lo, hi = eps[first - 1], eps[first]
        eps = np.geomspace(lo, hi, cfg.refine_points)
    return float(hi)


def run(cfg: ConvergenceConfig, ctx: RunContext) -> None:
    ctx.store.write_table("final", ctx.per_chunk(cfg, _final_gaps, seed=range(cfg.seeds)))


def summarise(cfg: ConvergenceConfig, tables: Tables) -> list[Claim]:
    final = tables["final"]
    thresholds = final.groupby("seed")[["gd_threshold_measured", "gd_threshold_predicted"]].first()
    rel = (thresholds.gd_threshold_measured / thresholds.gd_threshold_predicted - 1).abs()
    bn, gd_rows = final[final.method == "bngd"], final[final.method == "gd"]
    beyond = gd_rows[gd_rows.eps > 1.01 * gd_rows.gd_threshold_predicted]
    gd_bad = bool((beyond.diverged | (beyond.rel_gap >= 1)).all())
    worst = float(bn.rel_gap.where(~bn.diverged, np.inf).max())
    reached = int((bn.rel_gap <= cfg.reached_tol).sum())
    return [
        close_to(
            id="convergence.gd-threshold",
            claim="GD converges iff eps < 2/lambda_max (F1)",
            quantity="GD divergence threshold (mean over seeds)",
            predicted=thresholds.gd_threshold_predicted.mean(),
            measured=thresholds.gd_threshold_measured.mean(),
            rtol=0.01,
            also=bool(rel.max() < 0.01) and gd_bad,
            detail=f"max relative error over {len(rel)} seeds {rel.max():.2e} (allowed 0.01); every eps > 1.01x "
            f"threshold fails: {gd_bad}",
        ),
        below(
            id="convergence.bngd-never-diverges",
            claim=f"BNGD never diverges: its loss gap after {cfg.steps} steps is below its start for every eps "
            f"(eps_a = {cfg.eps_a:g}) (F2)",
            quantity=f"worst gap ratio J_K/J_0 over {cfg.eps_range}",
            measured=worst,
            bound=1.0,
            strict=True,
            detail=f"{len(bn)} runs, {int(bn.diverged.sum())} diverged; {reached} reached {cfg.reached_tol:g} of "
            f"the initial gap within {cfg.steps} steps (at huge eps BNGD's progress slows like 1/eps)",
        ),
    ]


def plot(cfg: ConvergenceConfig, tables: Tables, folder: Path) -> list[Path]:
    final = tables["final"].copy()
    ok = ~final.diverged & np.isfinite(final.rel_gap)
    final["plot_gap"] = final.rel_gap.where(ok, DIVERGED_DRAWN_AT).clip(1e-32, DIVERGED_DRAWN_AT)
    fig, (ax,) = new_figure()
    seed_band(ax, final[final.method == "gd"], "eps", "plot_gap", GD_COLOUR, "GD")
    seed_band(ax, final[final.method == "bngd"], "eps", "plot_gap", BNGD_COLOUR, f"BNGD (eps_a={cfg.eps_a:g})")
    sentinel(ax, DIVERGED_DRAWN_AT, f"diverged (drawn at {DIVERGED_DRAWN_AT:g})")
    threshold = float(final.gd_threshold_predicted.mean())
    ax.axvline(threshold, color=THEORY_COLOUR, ls="--", lw=1, label=r"$2/\lambda_{max}$ (theory)")
    ax.set_xlabel("learning rate eps")
    ax.set_ylabel(f"loss gap after {cfg.steps} steps / initial")
    ax.set_title(f"GD vs BNGD, {cfg.family}")
    ax.legend(loc="lower right", fontsize=8)
    return save(fig, folder, "convergence")


register(Experiment("convergence", "Convergence", ("F1", "F2", "O1"), ConvergenceConfig, run, summarise, plot))
