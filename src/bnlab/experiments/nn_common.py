"""Shared machinery of the network sweeps (docs/claims.md, N1-N6): config, one chunk of training, windows, figures.

A chunk is one batched ``bnlab.nn.train`` call: every network of one architecture (with or without BN, one
width) and one repeat ``seed`` (which sets both the initial weights and the batch order, as the paper's repeats
do), over the whole learning-rate grid times the swept values. The chunk's table is the training history with
each network's hyperparameters attached; ``final`` rows are those at ``step == steps``, with ``end_acc``, the
test accuracy at the end of training (:func:`end_of_training`) that the windows and figures use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator

from bnlab.experiments.base import RunContext, SeedsConfig
from bnlab.experiments.plotting import METHOD_COLOURS, new_figure, save
from bnlab.experiments.windows import accuracy_window
from bnlab.nn import DATASETS, ModelSpec, NetConfig, load_dataset, train

ROW = "Neural networks"
# A diverged network failed: for the windows its accuracy counts as zero.
DIVERGED_ACCURACY = 0.0


PAPER = {"num_lr": 40, "seeds": 5, "steps": 600, "log_every": 10, "dataset": "mnist", "n_test": 1000}
# Real MNIST in minutes on a 2-core CPU: the MLPs (M2, M5) keep the paper's grid, repeats, steps and logging; the
# CNN and the width sweep (h = 1000) run fewer rates, repeats or steps (see each experiment's profile).
MNIST = {**PAPER}


class NNSweepConfig(SeedsConfig):
    """Common fields of the network sweeps; defaults are the quick profile on embedded MNIST-1D."""

    dataset: str = "mnist1d"
    data_dir: str | None = None
    model: Literal["M1", "M2", "M3", "M4", "M5"] = "M5"
    hidden: int = Field(100, ge=1)
    lr_min: float = Field(1e-3, gt=0)
    lr_max: float = Field(1e3, gt=0)
    num_lr: int = Field(19, ge=2)
    seeds: int = Field(2, ge=1)  # a repeat fixes both the initial weights and the batch order
    steps: int = Field(300, ge=1)
    batch_size: int = Field(100, ge=1)
    log_every: int = Field(20, ge=1)
    n_test: int | None = Field(1000, ge=1)
    tol: float = Field(0.05, gt=0, lt=1)
    # The end-of-training accuracy is the mean over the evaluations in the last ``end_frac`` of the steps, not
    # one snapshot: SGD at large rates oscillates from step to step, and on MNIST-1D (M5, h=1000, 300 steps) a
    # single snapshot moved one seed's window by up to 1.5 decades (one dip of 0.13 cut it in two).
    end_frac: float = Field(0.2, ge=0, lt=1)
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        key = value.lower().replace("-", "_")
        if key not in DATASETS:
            raise ValueError(f"unknown dataset {value!r}; choose one of {', '.join(DATASETS)}")
        return key

    @model_validator(mode="after")
    def _ordered_rates(self):
        if self.lr_min >= self.lr_max:
            raise ValueError("lr_min must be below lr_max")
        return self

    def identity(self) -> dict[str, Any]:
        # Where the data files live does not change the result.
        return {k: v for k, v in super().identity().items() if k != "data_dir"}

    @property
    def lrs(self) -> np.ndarray:
        return np.geomspace(self.lr_min, self.lr_max, self.num_lr)


@lru_cache(maxsize=4)
def _dataset(name: str, data_dir: str | None, n_test: int | None):
    return load_dataset(name, data_dir, n_test=None if n_test is None else max(n_test, 1))


def train_chunk(
    cfg: NNSweepConfig,
    variants: Sequence[Mapping[str, Any]],
    bn_only: bool,
    bn: bool,
    hidden: int,
    seed: int,
    on_log: Callable | None = None,
) -> pd.DataFrame:
    """Train one chunk: every network of one architecture (``bn``, ``hidden``) and repeat ``seed``, for each of
    ``variants`` (NetConfig keyword dicts; just ``{}`` without BN when they concern BN parameters, ``bn_only``)
    crossed with the learning-rate grid; ``on_log`` goes to ``train``. Module-level so executors can ship it."""
    dataset = _dataset(cfg.dataset, cfg.data_dir, cfg.n_test)
    chunk_variants = variants if (bn or not bn_only) else [{}]
    configs = [NetConfig(lr=float(lr), seed=seed, **v) for v in chunk_variants for lr in cfg.lrs]
    result = train(
        ModelSpec(cfg.model, bn=bn, hidden=hidden),
        dataset,
        configs,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        log_every=cfg.log_every,
        data_seed=seed,
        test_size=cfg.n_test,
        device=cfg.device,
        dtype=getattr(torch, cfg.dtype),
        on_log=on_log,
    )
    nets = result.networks[["net", "lr", "bn_lr", "seed", "weight_scale", "gamma_init", "optimizer", "diverged_step"]]
    return result.history.merge(nets, on="net")


def run_sweep(
    cfg: NNSweepConfig,
    ctx: RunContext,
    variants: Sequence[Mapping[str, Any]] = ({},),
    widths: Sequence[int] | None = None,
    bn_only_variants: bool = False,
) -> None:
    """Every (bn, width, seed) chunk through the store (resumable), then the ``history`` and ``final`` tables.

    ``bn_only_variants``: the swept values concern BN parameters, so the no-BN network runs once as a baseline.
    """
    compute = partial(train_chunk, variants=list(variants), bn_only=bn_only_variants)
    history = ctx.per_chunk(cfg, compute, bn=(False, True), hidden=widths or [cfg.hidden], seed=range(cfg.seeds))
    ctx.store.write_table("history", history)
    ctx.store.write_table("final", end_of_training(history, cfg.steps, cfg.end_frac))


def end_of_training(history: pd.DataFrame, steps: int, end_frac: float) -> pd.DataFrame:
    """The rows at ``step == steps``, with ``end_acc``: the mean test accuracy of each network (``chunk``,
    ``net``) over its logged steps ``t >= (1 - end_frac) steps`` (the last one alone for ``end_frac = 0``);
    ``DIVERGED_ACCURACY`` for a network diverged by the end (before that its evaluations count as they are)."""
    keys = ["chunk", "net"]  # ``net`` numbers the networks within a chunk
    tail = history[history.step >= (1 - end_frac) * steps]
    end_acc = tail.groupby(keys).test_acc.mean().rename("end_acc").reset_index()
    final = history[history.step == steps].merge(end_acc, on=keys, how="left")
    return final.assign(end_acc=final.end_acc.where(~final.diverged, DIVERGED_ACCURACY).fillna(DIVERGED_ACCURACY))


def accuracy_curves(final: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean end-of-training test accuracy (``end_acc``) over seeds per (``by``..., lr), diverged networks
    counted as failed (0)."""
    frame = final.assign(score=final.end_acc.where(~final.diverged, DIVERGED_ACCURACY).fillna(DIVERGED_ACCURACY))
    grouped = frame.groupby([*by, "lr"], sort=True)
    return grouped.agg(score=("score", "mean"), diverged=("diverged", "mean")).reset_index()


def windows(final: pd.DataFrame, by: Sequence[str], tols: Sequence[float] = (0.01, 0.05)) -> pd.DataFrame:
    """Width in decades (:func:`bnlab.experiments.windows.accuracy_window`) of the learning rates whose mean test
    accuracy is within ``tol`` (absolute) of the best, per group ``by``; plus the best accuracy and its rate."""
    curves = accuracy_curves(final, by)
    rows = []
    for key, group in curves.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        row["best_acc"] = float(group.score.max())
        row["best_lr"] = float(group.lr.iloc[int(np.argmax(group.score.to_numpy()))])
        row["diverged_frac"] = float(group.diverged.mean())
        for tol in tols:  # the shared definition (experiments/windows.py), here with cost -accuracy
            row[f"window_{tol:g}"] = accuracy_window(group.lr.to_numpy(), group.score.to_numpy(), tol).width
        rows.append(row)
    return pd.DataFrame(rows)


def seed_windows(final: pd.DataFrame, by: Sequence[str], tol: float) -> pd.DataFrame:
    """Window width (decades within ``tol`` of the best accuracy) of each seed's own accuracy curve, per group
    ``by``: one row per (``by``..., seed) with column ``width``; diverged networks count as accuracy 0."""
    curves = accuracy_curves(final, [*by, "seed"])
    rows = [
        {**dict(zip([*by, "seed"], key, strict=True)), "width": accuracy_window(g.lr, g.score, tol).width}
        for key, g in curves.groupby([*by, "seed"], sort=True)
    ]
    return pd.DataFrame(rows)


def seed_widths(final: pd.DataFrame, tol: float, **where: Any) -> np.ndarray:
    """Per-seed window widths (ordered by seed) of the networks matching ``where`` (column=value)."""
    sel = final
    for column, value in where.items():
        sel = sel[sel[column] == value]
    return seed_windows(sel, [], tol).sort_values("seed").width.to_numpy() if len(sel) else np.array([np.nan])


def plot_curves(
    final: pd.DataFrame,
    folder: Path,
    name: str,
    title: str,
    hue: str | None = None,
    hue_label: str = "",
    tol: float | None = None,
    plain_once: bool = False,
) -> list[Path]:
    """End-of-training test accuracy (``end_acc``; and the final test loss) vs learning rate: one line per
    (bn, hue), median over seeds with a band from the lowest to the highest seed; solid with BN, dashed without
    (without a hue, BN green and no BN orange as in the OLS figures). ``tol``: shade each line's window (rates
    within ``tol`` of the best mean accuracy). ``plain_once``: the swept values concern BN only, so the no-BN
    baseline is one series ("no BN")."""
    fig, axes = new_figure(ncols=2)
    frame = final.assign(acc=final.end_acc.where(~final.diverged, np.nan), loss=final.test_loss)
    hues = sorted(frame[frame.bn][hue].unique()) if hue else [None]
    cmap = plt_colours(len(hues)) if hue else None
    series = []  # (bn, colour, label, rows)
    for bn in (False, True):
        if not bn and (plain_once or not hue):
            series.append((bn, METHOD_COLOURS["no-bn"], "no BN", frame[~frame.bn]))
            continue
        for i, value in enumerate(hues):
            sel = frame[(frame.bn == bn) & ((frame[hue] == value) if hue else True)]
            colour = cmap[i] if hue else METHOD_COLOURS["bn"]
            tag = "" if not hue else f", {hue_label}={value:g}" if _numeric(value) else f", {value}"
            series.append((bn, colour, ("BN" if bn else "no BN") + tag, sel))
    for ax, metric, label in ((axes[0], "acc", "test accuracy"), (axes[1], "loss", "test loss")):
        for bn, colour, tag, sel in series:
            if sel.empty:
                continue
            grouped = sel.groupby("lr")[metric]
            xs = np.asarray(grouped.median().index, dtype=float)
            ax.plot(xs, grouped.median(), color=colour, ls="-" if bn else "--", marker="o", ms=2.5, lw=1.4, label=tag)
            ax.fill_between(xs, grouped.min(), grouped.max(), color=colour, alpha=0.15, lw=0)
            if tol is not None and metric == "acc":
                curve = accuracy_curves(sel, [])
                for lo, hi in accuracy_window(curve.lr, curve.score, tol).runs:
                    ax.axvspan(lo, hi, color=colour, alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"{label} at the end" if metric == "acc" else f"final {label}")
        if metric == "loss":
            ax.set_yscale("log")
    axes[0].set_title(title + ("" if tol is None else f"\nshaded: window within {tol:g} of the best accuracy"))
    axes[0].legend(fontsize=7, ncol=1 if len(series) < 5 else 2, loc="best", framealpha=0.7)
    axes[1].set_title("line: median over seeds, band: lowest to highest seed; diverged runs are gaps", fontsize=8)
    return save(fig, folder, name)


def _numeric(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating)


def plt_colours(n: int) -> list:
    from matplotlib import colormaps

    if n == 1:
        return ["#1b9e77"]
    return [colormaps["viridis"](x) for x in np.linspace(0.05, 0.85, n)]
