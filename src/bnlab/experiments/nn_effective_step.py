"""nn-effective-step: BN's self-tuned step measured inside networks (the network analogue of O3 / F6-F7).

For every weight layer that feeds a BN layer the loss is invariant to the layer's scale, so SGD with rate lr moves
its direction with the effective step eps_hat = lr / ||W||^2, and plain gradient descent on that block is stable
while eps_hat < 2 / sharpness, sharpness being the top Hessian eigenvalue on the unit sphere
(``bnlab.nn.sharpness``). On least squares bnlab measured BNGD's eps_hat settling at 0.99 of that edge over a wide
band of eps, eps_hat growing like eps below the band and falling like 1/eps above it. This experiment trains a BN
network (all learning rates of the grid in one batched run per seed) and records, per network and layer,
||W||, eps_hat every logged step and the sphere sharpness every ``sharpness_every`` steps, then asks:
the same three regimes (slope +1, a plateau, slope -1 of the final eps_hat against lr), and how close to the edge
(``edge = eps_hat * sharpness / 2``; 1 is the edge) the plateau sits.

The plateau band is the learning rates whose seed-mean final test accuracy is within ``tol`` of the best
(the accuracy window); the small and large bands are the grid's lowest and highest decades. Sharpness is the
Hessian of the mean loss of ``hvp_batches`` fixed training batches of ``batch_size`` (BN in training mode).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator

from bnlab.experiments.base import Experiment, RunContext, Tables, register
from bnlab.experiments.claims import Claim, above, below, close_to
from bnlab.experiments.nn_common import ROW, NNSweepConfig, _dataset, train_chunk
from bnlab.experiments.plotting import new_figure, save
from bnlab.experiments.windows import accuracy_window
from bnlab.nn import batch_schedule
from bnlab.nn.sharpness import SharpnessTracker

# Least squares (SPEC 2b, measured by bnlab): the plateau's eps_hat_inf sits at 0.99 of 2 / lambda*_max.
OLS_EDGE_FRACTION = 0.99


class EffectiveStepNNConfig(NNSweepConfig):
    """BN's effective step lr/||W||^2 against the edge 2/sharpness inside a network, over lr and training."""

    # paper: not an experiment of the paper; its five repeats, on real MNIST.
    PROFILES = {
        "quick": {},
        "paper": {"dataset": "mnist", "num_lr": 13, "seeds": 5, "steps": 1000},
        "mnist": {"dataset": "mnist"},  # 13 rates x 2 seeds x 1000 steps: about 2 min here
    }

    lr_min: float = Field(1e-3, gt=0)
    lr_max: float = Field(1e3, gt=0)
    num_lr: int = Field(13, ge=5)
    seeds: int = Field(2, ge=1)
    steps: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1)
    sharpness_every: int = Field(100, ge=1)  # steps between sharpness measurements (a multiple of log_every)
    lanczos_steps: int = Field(20, ge=1)  # Hessian-vector products per layer and measurement
    hvp_batches: int = Field(4, ge=1)  # fixed training batches whose mean loss defines the Hessian

    @model_validator(mode="after")
    def _sharpness_on_logged_steps(self):
        if self.sharpness_every % self.log_every:
            raise ValueError("sharpness_every must be a multiple of log_every (sharpness is measured at logged steps)")
        return self


def track_seed(cfg: EffectiveStepNNConfig, seed: int) -> pd.DataFrame:
    """One batched BN run over the lr grid for one seed: per (step, layer, net) the tracker's columns with the
    network's lr, loss, accuracy and diverged flag."""
    data = _dataset(cfg.dataset, cfg.data_dir, cfg.n_test).to(cfg.device, getattr(torch, cfg.dtype))
    idx = batch_schedule(len(data.x_train), cfg.batch_size, cfg.hvp_batches, 10_000 + seed).to(cfg.device)
    batches = [(data.x_train[i], data.y_train[i]) for i in idx]
    tracker = SharpnessTracker(batches, "cross_entropy", cfg.lrs, cfg.sharpness_every, cfg.lanczos_steps, seed=seed)
    history = train_chunk(cfg, [{}], False, True, cfg.hidden, seed, on_log=tracker)
    return tracker.frame().merge(history.drop(columns="seed"), on=["net", "step"])


def run(cfg: EffectiveStepNNConfig, ctx: RunContext) -> None:
    ctx.store.write_table("track", ctx.per_chunk(cfg, track_seed, seed=range(cfg.seeds)))


# -- summary -----------------------------------------------------------------------------------------------
def final_rows(track: pd.DataFrame) -> pd.DataFrame:
    """The last measurement (with sharpness) of each network and layer, diverged networks left out."""
    measured = track[np.isfinite(track.sharpness)]
    last = measured[measured.step == measured.step.max()]
    return last[~last.diverged.astype(bool)]


def bands(cfg: EffectiveStepNNConfig, track: pd.DataFrame) -> dict[str, np.ndarray]:
    """Learning rates of the small band (lowest decade), the plateau (accuracy window) and the large band."""
    last = track[track.step == track.step.max()].drop_duplicates(["seed", "net"])
    acc = last.assign(acc=last.test_acc.where(~last.diverged.astype(bool))).groupby("lr").acc.mean()
    window = accuracy_window(acc.index.to_numpy(), acc.to_numpy(), cfg.tol)
    lrs = cfg.lrs
    inside = (lrs >= window.lo * (1 - 1e-9)) & (lrs <= window.hi * (1 + 1e-9))
    return {
        "small": lrs[lrs <= cfg.lr_min * 10 * (1 + 1e-9)],
        "plateau": lrs[inside],
        "large": lrs[lrs >= cfg.lr_max / 10 * (1 - 1e-9)],
    }


def _slope(frame: pd.DataFrame, lrs: np.ndarray) -> float:
    """Least-squares slope of log10 eff_step against log10 lr over the networks with lr in ``lrs``."""
    sel = frame[frame.lr.isin(lrs)]
    if sel.lr.nunique() < 2:
        return float("nan")
    return float(np.polyfit(np.log10(sel.lr), np.log10(sel.eff_step), 1)[0])


def summarise(cfg: EffectiveStepNNConfig, tables: Tables) -> list[Claim]:
    track = tables["track"]
    final = final_rows(track)
    band = bands(cfg, track)
    where = f"{cfg.model} (BN) on {cfg.dataset}"
    plateau = f"lr in [{band['plateau'].min():.3g}, {band['plateau'].max():.3g}]" if len(band["plateau"]) else "none"
    claims = [_norm_claim(track, where)]
    for layer, frame in final.groupby("layer"):
        tag = f"layer{layer}"
        in_band = frame[frame.lr.isin(band["plateau"])]
        edge = float(in_band.edge.median()) if len(in_band) else float("nan")
        claims += [
            close_to(
                id=f"nn-effective-step.small-lr-slope.{tag}",
                claim=f"Small lr: the effective step grows like lr (||W|| barely moves), layer {layer}, {where}",
                quantity="slope of log eff_step vs log lr, lowest decade",
                predicted=1.0,
                measured=_slope(frame, band["small"]),
                atol=0.25,
            ),
            below(
                id=f"nn-effective-step.plateau-slope.{tag}",
                claim=f"Plateau: ||W|| absorbs most of the lr change inside the accuracy window, layer {layer}",
                quantity=f"|slope| of log eff_step vs log lr, {plateau}",
                measured=abs(_slope(frame, band["plateau"])),
                bound=0.5,
                detail="slope 1: no self-tuning; 0: the effective step is the same at every lr",
            ),
            close_to(
                id=f"nn-effective-step.large-lr-slope.{tag}",
                claim=f"Large lr: the effective step falls like 1/lr (||W||^2 grows like lr^2), layer {layer}",
                quantity="slope of log eff_step vs log lr, top decade",
                predicted=-1.0,
                measured=_slope(frame, band["large"]),
                atol=0.25,
            ),
            below(
                id=f"nn-effective-step.under-edge.{tag}",
                claim=f"The effective step settles at or under the stability edge (eff_step * sharpness / 2 <= 1), "
                f"layer {layer}; least squares settles at {OLS_EDGE_FRACTION:g} of it",
                quantity=f"median edge number at step {int(frame.step.max())}, {plateau}",
                measured=edge,
                bound=1.0,
                detail=f"{edge / OLS_EDGE_FRACTION:.2f} of least squares' plateau: mini-batch training settles "
                f"further under the edge than full-batch BNGD (README); per lr (median over seeds): {_per_lr(in_band)}",
            ),
        ]
    return claims


def _per_lr(frame: pd.DataFrame) -> str:
    med = frame.groupby("lr").edge.median()
    return ", ".join(f"{lr:.3g}: {e:.2f}" for lr, e in med.items())


def _norm_claim(track: pd.DataFrame, where: str) -> Claim:
    """F3 in networks: ||W|| of a BN-preceded layer never decreases under SGD (gradient orthogonal to W; BN's eps
    adds a radial component of relative size eps / var, hence the 1e-4 relative slack)."""
    alive = track[~track.diverged.astype(bool)].sort_values("step")
    change = alive.groupby(["seed", "net", "layer"]).w_norm.transform(lambda s: s.diff() / s.shift())
    worst = float(change.min()) if change.notna().any() else float("nan")
    return above(
        id="nn-effective-step.norm-never-decreases",
        claim=f"||W|| of every BN-preceded layer never decreases during SGD (F3), {where}",
        quantity="smallest relative change of ||W|| between logged steps",
        measured=worst,
        bound=-1e-4,
    )


# -- figures -----------------------------------------------------------------------------------------------
def plot(cfg: EffectiveStepNNConfig, tables: Tables, folder: Path) -> list[Path]:
    """(1) final eff_step and 2/sharpness against lr, per layer, plateau band shaded; (2) both over training for
    one lr per decade; (3) the edge number against lr."""
    track = tables["track"]
    final = final_rows(track)
    band = bands(cfg, track)
    layers = sorted(final.layer.unique())
    paths = []
    fig, axes = new_figure(ncols=len(layers))
    for ax, layer in zip(axes, layers, strict=True):
        frame = final[final.layer == layer].groupby("lr")
        xs = np.asarray(frame.eff_step.median().index, dtype=float)
        ax.plot(xs, frame.eff_step.median(), "o-", ms=3, color="#1b9e77", label="effective step lr/||W||^2")
        ax.plot(xs, (2 / final[final.layer == layer].sharpness).groupby(final.lr).median(), "s--", ms=3,
                color="#444444", label="edge 2/sharpness")  # fmt: skip
        if len(band["plateau"]):
            ax.axvspan(band["plateau"].min(), band["plateau"].max(), color="#1b9e77", alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(f"layer {layer}: end of training (median over seeds)")
    axes[0].set_ylabel("step size on the unit sphere")
    axes[0].legend(fontsize=8, title="shaded: accuracy window", title_fontsize=7)
    paths += save(fig, folder, "nn_effective_step_vs_lr")

    alive = track[~track.diverged.astype(bool)]
    picks = cfg.lrs[:: max(1, round((len(cfg.lrs) - 1) / 6))]
    fig, axes = new_figure(ncols=len(layers))
    colours = _colours(len(picks))
    for ax, layer in zip(axes, layers, strict=True):
        for lr, colour in zip(picks, colours, strict=True):
            sel = alive[(alive.layer == layer) & np.isclose(alive.lr, lr)]
            if sel.empty:
                continue
            eff = sel.groupby("step").eff_step.median()
            edge = (2 / sel.sharpness).groupby(sel.step).median().dropna()
            ax.plot(eff.index, eff, "-", color=colour, lw=1.4, label=f"lr={lr:.3g}")
            ax.plot(edge.index, edge, ":", color=colour, lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"layer {layer}: solid eff. step, dotted 2/sharpness")
    axes[0].set_ylabel("step size on the unit sphere")
    axes[0].legend(fontsize=7, ncol=2)
    paths += save(fig, folder, "nn_effective_step_training")

    fig, (ax,) = new_figure()
    for layer, colour in zip(layers, _colours(len(layers)), strict=True):
        sel = final[final.layer == layer].groupby("lr").edge
        ax.plot(np.asarray(sel.median().index, dtype=float), sel.median(), "o-", ms=3, color=colour,
                label=f"layer {layer}")  # fmt: skip
    ax.axhline(1.0, color="#444444", lw=1, ls="--", label="edge of stability")
    ax.axhline(OLS_EDGE_FRACTION, color="#d95f02", lw=1, ls=":", label="least squares plateau (0.99)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("eff_step * sharpness / 2 (end of training)")
    ax.legend(fontsize=8)
    paths += save(fig, folder, "nn_effective_step_edge")
    return paths


def _colours(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.05, 0.9, n)]


register(Experiment("nn-effective-step", ROW, ("N7", "F3", "F6", "F7"), EffectiveStepNNConfig, run, summarise, plot))
