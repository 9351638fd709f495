"""O1 / F1, F2: the loss gap after K steps against the learning rate, GD beside BNGD.

GD converges only for ``eps < 2 / lambda_max`` and diverges beyond; BNGD (``eps_a = 1``) converges for every
eps. The GD threshold is measured by bracketing the eps where the gap after K steps stops shrinking, refined
by batched re-runs inside the bracket (no use of the predicted value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from bnlab.experiments.base import Claim, Experiment, ExperimentConfig, RunContext, Tables, register
from bnlab.experiments.plotting import BNGD_COLOUR, GD_COLOUR, THEORY_COLOUR, new_figure, save, seed_band
from bnlab.ols import Problem, bngd, gd, theory
from bnlab.sweep import run_chunks


class ConvergenceConfig(ExperimentConfig):
    d: int = Field(10, ge=1)
    kappa: float = Field(100.0, ge=1)
    spacing: Literal["linear", "log"] = "log"
    u_norm: Literal["gaussian", "unit"] = "gaussian"
    w0_norm: Literal["gaussian", "unit"] = "gaussian"
    eps_min: float = Field(1e-4, gt=0)
    eps_max: float = Field(1e8, gt=0)
    num_eps: int = Field(97, ge=3)
    eps_a: float = Field(1.0, gt=0)
    steps: int = Field(1000, ge=1)
    seeds: int = Field(3, ge=1)
    refine_points: int = Field(128, ge=8)
    refine_rounds: int = Field(2, ge=0)
    compile: bool | Literal["auto"] = "auto"


def _problem(cfg: ConvergenceConfig, seed: int) -> Problem:
    return Problem.from_spectrum(cfg.d, cfg.kappa, cfg.spacing, seed=seed, u_norm=cfg.u_norm)


def _final_gaps(spec: dict) -> pd.DataFrame:
    cfg = ConvergenceConfig(**spec["config"])
    seed = spec["seed"]
    problem = _problem(cfg, seed)
    eps = np.geomspace(cfg.eps_min, cfg.eps_max, cfg.num_eps)
    rows = []
    common = {"seed": 1000 + seed, "w0_norm": cfg.w0_norm, "record_every": cfg.steps, "device": cfg.device}
    for method, traj in (
        ("gd", gd(problem, eps, cfg.steps, **common)),
        ("bngd", bngd(problem, eps, cfg.steps, eps_a=cfg.eps_a, compile=cfg.compile, **common)),
    ):
        gap0, gap = traj.excess_loss[0], traj.excess_loss[-1]
        rows.append(
            pd.DataFrame(
                {
                    "method": method,
                    "seed": seed,
                    "eps": eps,
                    "rel_gap": gap / gap0,
                    "diverged": traj.diverged,
                }
            )
        )
    threshold = _measure_gd_threshold(problem, cfg, seed)
    frame = pd.concat(rows, ignore_index=True)
    frame["gd_threshold_measured"] = threshold
    frame["gd_threshold_predicted"] = theory.gd_threshold(problem)
    return frame


def _grows(problem: Problem, eps: np.ndarray, cfg: ConvergenceConfig, seed: int) -> np.ndarray:
    traj = gd(problem, eps, cfg.steps, seed=1000 + seed, w0_norm=cfg.w0_norm, record_every=cfg.steps)
    return traj.diverged | ~(traj.excess_loss[-1] < traj.excess_loss[0])


def _measure_gd_threshold(problem: Problem, cfg: ConvergenceConfig, seed: int) -> float:
    """The smallest eps at which GD's gap after K steps is not below its initial gap, bracketed on the
    sweep's grid and refined ``refine_rounds`` times on a geometric grid inside the bracket."""
    eps = np.geomspace(cfg.eps_min, cfg.eps_max, cfg.num_eps)
    for _ in range(cfg.refine_rounds + 1):
        grows = _grows(problem, eps, cfg, seed)
        if not grows.any() or grows[0]:
            return float("nan")  # no bracket inside the grid
        first = int(np.argmax(grows))
        lo, hi = eps[first - 1], eps[first]
        eps = np.geomspace(lo, hi, cfg.refine_points)
    return float(hi)


def run(cfg: ConvergenceConfig, ctx: RunContext) -> None:
    chunks = {f"seed-{s}": {"config": cfg.model_dump(), "seed": s} for s in range(cfg.seeds)}
    ctx.store.write_table(
        "final", run_chunks(ctx.store, chunks, _final_gaps, ctx.executor, ctx.progress, "convergence")
    )


def summarise(cfg: ConvergenceConfig, tables: Tables) -> list[Claim]:
    final = tables["final"]
    thresholds = final.groupby("seed")[["gd_threshold_measured", "gd_threshold_predicted"]].first()
    rel = (thresholds.gd_threshold_measured / thresholds.gd_threshold_predicted - 1).abs()
    bn = final[final.method == "bngd"]
    gd_rows = final[final.method == "gd"]
    bn_ok = bool((~bn.diverged & (bn.rel_gap < 1)).all())
    worst = float(bn.rel_gap.max())
    beyond = gd_rows[gd_rows.eps > 1.01 * gd_rows.gd_threshold_predicted]
    gd_bad = bool((beyond.diverged | (beyond.rel_gap >= 1)).all())
    eps_range = f"eps in [{cfg.eps_min:g}, {cfg.eps_max:g}]"
    return [
        Claim(
            "GD converges iff eps < 2/lambda_max (F1)",
            "GD divergence threshold",
            float(thresholds.gd_threshold_predicted.mean()),
            float(thresholds.gd_threshold_measured.mean()),
            bool(rel.max() < 0.01) and gd_bad,
            f"max relative error over {len(rel)} seeds {rel.max():.2e}; every eps > 1.01x threshold fails: {gd_bad}",
        ),
        Claim(
            f"BNGD converges for every eps (eps_a = {cfg.eps_a:g}) (F2)",
            f"worst gap ratio J_K/J_0 over {eps_range}",
            None,
            worst,
            bn_ok,
            f"{len(bn)} runs, {int(bn.diverged.sum())} diverged, worst gap ratio after {cfg.steps} steps {worst:.2e}",
        ),
    ]


def plot(cfg: ConvergenceConfig, tables: Tables, folder: Path) -> list[Path]:
    final = tables["final"].copy()
    final["plot_gap"] = final.rel_gap.where(~final.diverged & np.isfinite(final.rel_gap), 1e3).clip(1e-32, 1e3)
    fig, (ax,) = new_figure()
    seed_band(ax, final[final.method == "gd"], "eps", "plot_gap", GD_COLOUR, "GD")
    seed_band(ax, final[final.method == "bngd"], "eps", "plot_gap", BNGD_COLOUR, f"BNGD (eps_a={cfg.eps_a:g})")
    threshold = float(final.gd_threshold_predicted.mean())
    ax.axvline(threshold, color=THEORY_COLOUR, ls="--", lw=1, label=r"$2/\lambda_{max}$ (theory)")
    ax.set_xlabel("learning rate eps")
    ax.set_ylabel(f"loss gap after {cfg.steps} steps / initial")
    ax.set_title(f"GD vs BNGD, d={cfg.d}, kappa={cfg.kappa:g} ({cfg.spacing})")
    ax.legend(loc="lower right")
    return save(fig, folder, "convergence")


register(
    Experiment(
        name="convergence",
        purpose="Loss gap after K steps vs learning rate: GD diverges past 2/lambda_max, BNGD never does",
        row="Convergence",
        facts=("F1", "F2", "O1"),
        config=ConvergenceConfig,
        run=run,
        summarise=summarise,
        plot=plot,
        profiles={
            "quick": {},
            "paper": {"num_eps": 241, "steps": 5000, "seeds": 5, "refine_points": 256, "refine_rounds": 3},
        },
    )
)
