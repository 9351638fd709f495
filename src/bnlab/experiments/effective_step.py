"""O3 / F6, F7: BNGD's effective step size ``eps_hat_k = eps a_k^2 / ||w_k||_H^2`` and its limit, against eps.

Three regimes are predicted. Small eps: ``||w||`` barely grows, so ``eps_hat_inf`` is proportional to eps
(slope 1 in log-log). Intermediate eps: whenever ``eps_hat`` exceeds the stability edge ``2 / lambda*_max`` the
error grows along H*'s top eigenvector, the gradient grows, and ``||w||^2`` (which only grows, F3) increases until
``eps_hat`` falls back below the edge: a plateau just under ``2 / lambda*_max``, BNGD tuning itself to the edge of
stability. Huge eps: the first step alone makes ``||w_1||^2 ~ eps^2 ||grad||^2``, so ``eps_hat ~ 1 / eps``
(slope -1) and progress slows like ``1 / eps``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from bnlab.experiments.base import EpsGridConfig, Experiment, RunContext, SeedsConfig, Tables, register
from bnlab.experiments.claims import Claim, below, close_to
from bnlab.experiments.plotting import THEORY_COLOUR, new_figure, save, seed_band
from bnlab.experiments.problems import CompiledConfig, SpectrumConfig
from bnlab.ols import bngd, theory


class EffectiveStepConfig(SpectrumConfig, CompiledConfig, EpsGridConfig, SeedsConfig):
    """eps_hat_k over k and eps_hat_inf vs eps: slope 1, plateau just under 2/lambda*_max, slope -1."""

    PROFILES = {"quick": {"compile": False}, "paper": {"num_eps": 241, "seeds": 5, "steps": 10000}}

    steps: int = Field(3000, ge=10)
    record_every: int = Field(10, ge=1)
    eps_a: float = Field(1.0, gt=0)
    trace_eps: tuple[float, ...] = (0.01, 1.0, 100.0, 1e4)  # eps whose eps_hat_k is drawn over k
    # Slope 1 is a limit statement: fit over runs with eps <= small_eps_max whose gap fell below converged_gap
    # (an unconverged run's a_k, ||w_k||_H are not yet at their limit). Slope -1 is asymptotic in eps.
    small_eps_max: float = Field(4e-3, gt=0)
    converged_gap: float = Field(1e-4, gt=0)
    large_eps_min: float = Field(1e5, gt=0)
    plateau: tuple[float, float] = (0.1, 10.0)  # eps range of the plateau claim
    slope_tolerance: float = Field(0.05, gt=0)
    plateau_band: float = Field(0.05, gt=0)  # plateau within this fraction below the edge


def _chunk(cfg: EffectiveStepConfig, seed: int) -> pd.DataFrame:
    problem = cfg.problem(seed)
    eps = np.unique(np.concatenate([cfg.eps_grid, cfg.trace_eps]))
    traj = bngd(problem, eps, cfg.steps, eps_a=cfg.eps_a, **cfg.bn_start(seed, record_every=cfg.record_every))
    frame = pd.DataFrame(
        {
            "eps": np.tile(eps, len(traj.steps)),
            "step": np.repeat(traj.steps, len(eps)),
            "eff_step": traj.eff_step.ravel(),
            "rel_gap": (traj.excess_loss / traj.excess_loss[0]).ravel(),
        }
    )
    frame = frame[frame.eps.isin(cfg.trace_eps) | (frame.step == traj.steps[-1])]
    frame["edge"] = theory.bngd_stability_edge(problem)
    frame["diverged"] = np.tile(traj.diverged, len(traj.steps))[frame.index]
    return frame.reset_index(drop=True)


def run(cfg: EffectiveStepConfig, ctx: RunContext) -> None:
    steps = ctx.per_chunk(cfg, _chunk, seed=range(cfg.seeds))
    final = steps[steps.step == steps.step.max()].reset_index(drop=True)
    ctx.store.write_table("final", final)
    ctx.store.write_table("traces", steps[steps.eps.isin(cfg.trace_eps)].reset_index(drop=True))


def _slope(frame: pd.DataFrame) -> float:
    """Median over seeds of each seed's log-log slope (seeds differ in prefactor, not in slope)."""
    slopes = [
        np.polyfit(np.log(sub.eps), np.log(sub.eff_step), 1)[0] for _, sub in frame.groupby("seed") if len(sub) >= 2
    ]
    return float(np.median(slopes)) if slopes else float("nan")


def summarise(cfg: EffectiveStepConfig, tables: Tables) -> list[Claim]:
    final = tables["final"]
    small = final[(final.eps <= cfg.small_eps_max) & (final.rel_gap <= cfg.converged_gap)]
    large = final[final.eps >= cfg.large_eps_min]
    slope_small, slope_large = _slope(small), _slope(large)
    plateau = final[(final.eps >= cfg.plateau[0]) & (final.eps <= cfg.plateau[1])]
    ratio = plateau.eff_step / plateau.edge
    edge0 = final[final.seed == final.seed.min()].edge.iloc[0]
    plat0 = plateau[plateau.seed == plateau.seed.min()]
    ratio_all = final.eff_step / final.edge
    slopes = [
        close_to(
            id=f"effective-step.{id}",
            claim=claim,
            quantity=f"log-log slope of eps_hat_inf vs eps, {where}",
            predicted=slope,
            measured=measured,
            atol=cfg.slope_tolerance,
            detail=f"{n} runs; allowed |slope - ({slope:g})| <= {cfg.slope_tolerance:g}",
        )
        for id, claim, where, slope, measured, n in (
            (
                "small-eps-slope",
                "Small eps: eps_hat_inf proportional to eps (F6)",
                f"converged runs with eps <= {cfg.small_eps_max:g}",
                1.0,
                slope_small,
                len(small),
            ),
            (
                "huge-eps-slope",
                "Huge eps: eps_hat_inf ~ 1/eps (F7)",
                f"eps >= {cfg.large_eps_min:g}",
                -1.0,
                slope_large,
                len(large),
            ),
        )
    ]
    return [
        *slopes,
        close_to(
            id="effective-step.plateau-under-edge",
            claim="In between, eps_hat_inf settles just under the stability edge 2/lambda*_max (F7)",
            quantity=f"median eps_hat_inf for eps in [{cfg.plateau[0]:g}, {cfg.plateau[1]:g}] (seed 0)",
            predicted=edge0,
            measured=plat0.eff_step.median(),
            rtol=cfg.plateau_band,
            also=bool((ratio <= 1 + 1e-6).all() and 1 - cfg.plateau_band <= ratio.median() <= 1),
            detail=f"eps_hat_inf / edge over {len(ratio)} runs and {final.seed.nunique()} seeds: median "
            f"{ratio.median():.4f}, range {ratio.min():.4f} .. {ratio.max():.4f} (required: median within "
            f"{cfg.plateau_band:g} below 1, none above)",
        ),
        below(
            id="effective-step.never-above-edge",
            claim="The effective step never exceeds the edge at the limit, for any eps (F7)",
            quantity="max eps_hat_inf / (2/lambda*_max) over all eps",
            measured=ratio_all.max(),
            bound=1 + 1e-6,
            detail=f"{len(final)} runs, {cfg.eps_range}, {int(final.diverged.sum())} diverged",
        ),
    ]


def plot(cfg: EffectiveStepConfig, tables: Tables, folder: Path) -> list[Path]:
    final, traces = tables["final"], tables["traces"]
    fig, (ax, ax_k) = new_figure(ncols=2, width=5.0, height=3.8)
    seed_band(ax, final, "eps", "eff_step", "#1b9e77", r"measured $\hat\epsilon_\infty$ (median, seed range)")
    edge = float(final.edge.median())
    ax.axhline(edge, color=THEORY_COLOUR, ls="--", lw=1, label=r"edge $2/\lambda^*_{max}$ (theory)")
    xs = np.geomspace(cfg.eps_min, cfg.eps_max, 3)
    small = (
        final[(final.eps <= cfg.small_eps_max) & (final.rel_gap <= cfg.converged_gap)].groupby("eps").eff_step.median()
    )
    large = final[final.eps >= cfg.large_eps_min].groupby("eps").eff_step.median()
    if len(small):
        ax.plot(xs, small.iloc[0] * xs / small.index[0], ":", color="#7570b3", lw=1, label="slope 1")
    if len(large):
        ax.plot(xs, large.iloc[-1] * large.index[-1] / xs, ":", color="#e7298a", lw=1, label="slope -1")
    ax.set_ylim(final.eff_step.min() / 3, edge * 10)
    ax.set_xlabel("learning rate eps")
    ax.set_ylabel(r"$\hat\epsilon_\infty = \epsilon a^2 / \|w\|_H^2$ at the end")
    ax.set_title(f"Effective step vs eps, d={cfg.d}, kappa={cfg.kappa:g}")
    ax.legend(fontsize=8)
    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
    first = traces[traces.seed == traces.seed.min()]
    for colour, (eps, sub) in zip(colours * 4, first.groupby("eps"), strict=False):
        ax_k.plot(sub.step, sub.eff_step, color=colour, lw=1.4, label=f"eps = {eps:g}")
    ax_k.axhline(float(first.edge.iloc[0]), color=THEORY_COLOUR, ls="--", lw=1, label="edge (theory)")
    ax_k.set_yscale("log")
    ax_k.set_xlabel("step k")
    ax_k.set_ylabel(r"$\hat\epsilon_k$")
    ax_k.set_title("Effective step over the run (seed 0)")
    ax_k.legend(fontsize=8)
    return save(fig, folder, "effective_step")


register(
    Experiment(
        "effective-step", "Robustness to learning rate", ("F6", "F7", "O3"), EffectiveStepConfig, run, summarise, plot
    )
)
