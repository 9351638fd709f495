"""O1 / F2, F9: where BNGD converges in the (eps, eps_a) plane.

The theorem (F2) covers ``0 < eps_a <= 1``: convergence for every eps. Beyond it, the scale update
``a_{k+1} - p_k = (1 - eps_a)(a_k - p_k)`` (with ``p_k = w_k^T g / ||w_k||_H`` and ``d^2 J / d a^2 = 1``) is a
contraction iff ``|1 - eps_a| < 1``: eps_a in (1, 2) was seen to converge, eps_a > 2 makes ``a`` oscillate with
growing amplitude (F9). Each cell runs K steps; it counts as decreasing when the loss gap ends below its start,
as converged when below ``tol`` times it, and as diverged when the run blew up or the gap grew.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from pydantic import Field

from bnlab.experiments.base import EpsGridConfig, Experiment, RunContext, SeedsConfig, Tables, register
from bnlab.experiments.claims import Claim, close_to, fmt
from bnlab.experiments.plotting import THEORY_COLOUR, new_figure, save
from bnlab.experiments.problems import CompiledConfig, SpectrumConfig
from bnlab.ols import bngd

PAPER_EPS_A = [0.001, 0.01, 0.1, 0.3, 0.5, 0.8, 1.0, 1.1, 1.3, 1.5, 1.7, 1.9, 1.99, 2.0, 2.01, 2.1, 2.5, 3.0]


class PhaseDiagramConfig(SpectrumConfig, CompiledConfig, EpsGridConfig, SeedsConfig):
    """Where BNGD converges in the (eps, eps_a) plane, including eps_a in (1, 2] and beyond 2."""

    PROFILES = {
        "quick": {},
        "paper": {"num_eps": 241, "seeds": 5, "steps": 5000, "eps_a": PAPER_EPS_A},
    }

    num_eps: int = Field(37, ge=3)
    eps_a: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0, 1.2, 1.5, 1.8, 1.95, 2.05, 2.2, 2.5, 3.0)
    steps: int = Field(2000, ge=10)
    tol: float = Field(1e-6, gt=0, lt=1)
    seeds: int = Field(2, ge=1)


def _chunk(cfg: PhaseDiagramConfig, seed: int) -> pd.DataFrame:
    problem = cfg.problem(seed)
    eps, eps_a = np.meshgrid(cfg.eps_grid, np.asarray(cfg.eps_a))
    eps, eps_a = eps.ravel(), eps_a.ravel()
    traj = bngd(problem, eps, cfg.steps, eps_a=eps_a, **cfg.bn_start(seed, record_every=cfg.steps))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_gap = traj.excess_loss[-1] / traj.excess_loss[0]
    blown = traj.diverged | ~np.isfinite(rel_gap) | (rel_gap >= 1)
    status = np.where(blown, "diverged", np.where(rel_gap <= cfg.tol, "converged", "decreasing"))
    return pd.DataFrame({"eps": eps, "eps_a": eps_a, "rel_gap": rel_gap, "status": status})


def run(cfg: PhaseDiagramConfig, ctx: RunContext) -> None:
    ctx.store.write_table("cells", ctx.per_chunk(cfg, _chunk, seed=range(cfg.seeds)))


def summarise(cfg: PhaseDiagramConfig, tables: Tables) -> list[Claim]:
    cells = tables["cells"]
    theorem = cells[cells.eps_a <= 1]
    reached = f"; {int((theorem.status == 'converged').sum())} reached {cfg.tol:g} in {cfg.steps} steps, worst gap "
    regions = (  # id, claim, the cells, the status expected of every one of them, extra detail
        (
            "theorem-range",
            "BNGD's loss gap decreases for every eps when 0 < eps_a <= 1 (F2)",
            theorem,
            "decreasing",
            reached + f"ratio {theorem.rel_gap.max():.3g}",
        ),
        (
            "beyond-theorem",
            "With eps_a in (1, 2) the loss gap also decreases for every eps (F9, outside the theorem)",
            cells[(cells.eps_a > 1) & (cells.eps_a < 2)],
            "decreasing",
            "",
        ),
        ("diverges-above-two", "eps_a > 2 diverges (F9)", cells[cells.eps_a > 2], "diverged", ""),
    )
    claims = []
    for id, claim, region, expected, extra in regions:
        if not len(region):
            continue
        as_expected = (region.status == "diverged") == (expected == "diverged")
        span = f"eps_a in {fmt(sorted(region.eps_a.unique()))}, {cfg.eps_range}"
        claims.append(
            close_to(
                id=f"phase-diagram.{id}",
                claim=claim,
                quantity=f"fraction of runs {'diverged' if expected == 'diverged' else 'with a decreasing gap'}",
                predicted=1.0,
                measured=as_expected.mean(),
                detail=f"{len(region)} runs at {span}{extra}",
            )
        )
    return claims


def plot(cfg: PhaseDiagramConfig, tables: Tables, folder: Path) -> list[Path]:
    cells = tables["cells"]
    # Worst seed per cell: a cell is only as good as its worst run.
    worst = cells.assign(g=cells.rel_gap.where(cells.status != "diverged", np.inf)).groupby(["eps_a", "eps"]).g.max()
    grid = worst.unstack("eps")
    eps, eps_a = grid.columns.to_numpy(), grid.index.to_numpy()
    values = grid.to_numpy()
    fig, (ax,) = new_figure(width=7.0, height=4.2)
    shown = np.where(np.isfinite(values), np.clip(values, 1e-30, 1), np.nan)
    mesh = ax.pcolormesh(
        _edges(np.log10(eps)), np.arange(len(eps_a) + 1), shown, cmap="viridis", norm=LogNorm(1e-30, 1), shading="flat"
    )
    diverged = ~np.isfinite(values)
    ax.pcolormesh(
        _edges(np.log10(eps)),
        np.arange(len(eps_a) + 1),
        np.where(diverged, 1.0, np.nan),
        cmap="Reds",
        vmin=0,
        vmax=1.2,
        shading="flat",
    )
    ax.set_yticks(np.arange(len(eps_a)) + 0.5, [f"{a:g}" for a in eps_a])
    for boundary, label in ((1.0, "eps_a = 1 (theorem)"), (2.0, "eps_a = 2")):
        ax.axhline(np.searchsorted(eps_a, boundary, side="right"), color=THEORY_COLOUR, ls="--", lw=1.2)
        ax.text(np.log10(eps[0]), np.searchsorted(eps_a, boundary, side="right") + 0.1, label, fontsize=8)
    ax.set_xlabel("log10 learning rate eps")
    ax.set_ylabel("eps_a (BN scale learning rate)")
    ax.set_title(f"BNGD: loss gap after {cfg.steps} steps / initial (red: diverged), d={cfg.d}, kappa={cfg.kappa:g}")
    fig.colorbar(mesh, ax=ax, label="gap ratio (worst seed)")
    ax.grid(False)
    return save(fig, folder, "phase_diagram")


def _edges(centres: np.ndarray) -> np.ndarray:
    step = np.diff(centres).mean() if len(centres) > 1 else 1.0
    return np.concatenate([centres - step / 2, [centres[-1] + step / 2]])


register(Experiment("phase-diagram", "Convergence", ("F2", "F9", "O1"), PhaseDiagramConfig, run, summarise, plot))
