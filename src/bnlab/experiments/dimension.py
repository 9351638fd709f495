"""O6 / F8: robustness to the dimension: the learning-rate windows of O5 for each d, under two normalisations.

The paper claims BNGD's good range of learning rates widens with the dimension ("the higher the better") while
GD's does not depend on it. How ``u`` and ``w0`` are normalised matters: with standard Gaussian draws
``||w0||^2 ~ d``, and by the scaling law (F4) a larger ``||w0||`` acts like a smaller eps, which alone shifts and
stretches BNGD's window. So both normalisations run: ``gaussian`` (u, w0 ~ N(0, I_d)) and ``unit`` (the same
draws scaled to unit Euclidean length). The spectrum is fixed in ``[1, kappa]`` for every d.

For d above 1000 the problem is built in H's eigenbasis (Q = I) rather than with a Haar rotation: the dynamics
are rotation-equivariant and u, w0 isotropic, so the measured quantities have the same distribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from bnlab.experiments.base import Experiment, RunContext, Tables, register
from bnlab.experiments.claims import Claim, wider_than
from bnlab.experiments.plotting import BNGD_COLOUR, GD_COLOUR, new_figure, save
from bnlab.experiments.problems import Norm, Spacing, spectrum_problem
from bnlab.experiments.steps_to_tol import StepsToTolConfig, gd_predicted_width, steps_frame, widths_table


class DimensionConfig(StepsToTolConfig):
    """Learning-rate windows (decades) per dimension d, with unit-norm and Gaussian u, w0."""

    PROFILES = {"quick": {}, "paper": {"dims": [10, 100, 1000, 10000], "num_eps": 241, "seeds": 5}}

    dims: tuple[int, ...] = (10, 100, 1000)
    norms: tuple[Norm, ...] = ("unit", "gaussian")
    kappa: float = Field(100.0, ge=1)
    spacing: Spacing = "linear"
    gd_spread_decades: float = Field(0.25, gt=0)  # "no effect": GD's window varies less than this over d


def _chunk(cfg: DimensionConfig, norm: Norm, d: int, seed: int) -> pd.DataFrame:
    problem = spectrum_problem(d, cfg.kappa, cfg.spacing, seed, norm)
    frame = steps_frame(problem, cfg, seed, norm)
    frame["gd_width_10x_predicted"] = gd_predicted_width(problem, 10.0)
    return frame


def run(cfg: DimensionConfig, ctx: RunContext) -> None:
    steps = ctx.per_chunk(cfg, _chunk, norm=cfg.norms, d=cfg.dims, seed=range(cfg.seeds))
    ctx.store.write_table("steps", steps)
    ctx.store.write_table("windows", widths_table(steps, ["norm", "d"]))


def _medians(windows: pd.DataFrame) -> pd.DataFrame:
    return windows.groupby(["norm", "method", "d"])[["width_2x", "width_10x", "span_10x"]].median()


def summarise(cfg: DimensionConfig, tables: Tables) -> list[Claim]:
    windows = tables["windows"]
    med = _medians(windows)
    predicted = tables["steps"].groupby(["norm", "d"]).gd_width_10x_predicted.median()
    d_lo, d_hi = min(cfg.dims), max(cfg.dims)
    claims = []
    for norm in cfg.norms:
        bn, gd_ = med.loc[(norm, "bngd")], med.loc[(norm, "gd")]
        per_d = ", ".join(f"d={d}: {bn.width_10x[d]:.2f} (span {bn.span_10x[d]:.2f})" for d in cfg.dims)
        bn_seeds = windows[(windows.norm == norm) & (windows.method == "bngd")]
        claims.append(
            wider_than(
                id=f"dimension.bngd-widens.{norm}",
                claim=f"BNGD's 10x-window widens with d, {norm} u and w0 (F8)",
                quantity=f"BNGD 10x-window at d={d_hi} minus at d={d_lo} (decades, mean over seeds)",
                values=bn_seeds[bn_seeds.d == d_hi].width_10x.to_numpy(),
                baseline=bn_seeds[bn_seeds.d == d_lo].width_10x.to_numpy(),
                paired=False,  # the seeds draw different problems at each d
                detail=f"median over {cfg.seeds} seeds, by d: {per_d}",
            )
        )
        spread = float(gd_.width_10x.max() - gd_.width_10x.min())
        per_d = ", ".join(f"d={d}: {gd_.width_10x[d]:.2f}" for d in cfg.dims)
        claims.append(
            Claim(
                id=f"dimension.gd-flat.{norm}",
                claim=f"GD's 10x-window does not depend on d, {norm} u and w0 (F1, F8)",
                quantity="GD 10x-window (decades, mean over d) vs prediction from rho(eps)",
                predicted=predicted.loc[norm].mean(),
                measured=gd_.width_10x.mean(),
                holds=spread <= cfg.gd_spread_decades,
                detail=f"spread over d {spread:.2f} decades (allowed {cfg.gd_spread_decades:g}); by d: {per_d}",
            )
        )
    return claims


def plot(cfg: DimensionConfig, tables: Tables, folder: Path) -> list[Path]:
    windows = tables["windows"]
    fig, axes = new_figure(ncols=len(cfg.norms), width=4.6, height=3.8)
    for ax, norm in zip(axes, cfg.norms, strict=True):
        for method, colour, name in (("gd", GD_COLOUR, "GD"), ("bngd", BNGD_COLOUR, "BNGD")):
            w = windows[(windows.norm == norm) & (windows.method == method)]
            for f, style in (("10x", "-"), ("2x", ":")):
                g = w.groupby("d")[f"width_{f}"]
                ds = np.asarray(g.median().index, dtype=float)
                ax.plot(ds, g.median(), style, marker="o", color=colour, label=f"{name} {f}")
                ax.fill_between(ds, g.min(), g.max(), color=colour, alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("dimension d")
        ax.set_ylabel("window width (decades of eps)")
        ax.set_title(f"{norm} u and w0")
        ax.legend(fontsize=8)
    fig.suptitle(f"Robustness to dimension, kappa={cfg.kappa:g} ({cfg.spacing}), tol {cfg.tol:g}, {cfg.steps} steps")
    return save(fig, folder, "dimension")


register(Experiment("dimension", "Robustness to dimension", ("F8", "O6"), DimensionConfig, run, summarise, plot))
