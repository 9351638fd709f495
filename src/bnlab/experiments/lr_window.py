"""``bnlab lr-window``: the learning-rate window of your own network, with BN and without, measured.

Every learning rate of a geometric grid, for every seed, is its own network trained for the whole budget (the
seeds vary the initial weights; all networks see the same batches), in one batched run for the model and one for
its BN-free twin (``bnlab.nn.without_bn``: BN removed, the same weights otherwise). The score of a rate is the
final test accuracy (BN in inference mode); a network that diverged scores nothing and is never inside a window.
The window at ``tol`` is the set of rates whose accuracy is within ``tol`` (absolute: 0.01 = one accuracy point)
of the best (``bnlab.experiments.windows.accuracy_window``), measured per seed; its width in decades comes with a
seed-bootstrap interval, and "BN's window is wider" holds only when the interval of the paired per-seed difference
lies above zero.

Unlike an lr-range test (Smith, "Cyclical Learning Rates", 2017; fastai's ``lr_find``), which ramps the rate of
one network over a few hundred batches and reads a rate off the loss curve, each rate here is trained from scratch
for the full budget: what is reported is how good training at that rate ends up, not where a warm network starts
to fail, and the window's width, which a ramp cannot measure, is the point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from bnlab.errors import BnlabError
from bnlab.experiments.claims import Claim, fmt, wider_than
from bnlab.experiments.plotting import METHOD_COLOURS, figure_style, new_figure, save
from bnlab.experiments.windows import accuracy_window
from bnlab.nn import BatchedNet, Dataset, NetConfig, load_dataset, train, without_bn
from bnlab.nn.convert import has_bn, load_factory
from bnlab.nn.npz import load_npz
from bnlab.nn.trainer import OPTIMIZERS
from bnlab.sweep.files import write_json_atomic, write_parquet_atomic

TOLS = (0.01, 0.05)
DEFAULT_LRS = "1e-3:1e3:40"


@dataclass
class LRWindowResult:
    """``final``: one row per network; ``windows``: per variant, seed and tol; the claims; where files went."""

    final: pd.DataFrame
    history: pd.DataFrame
    windows: pd.DataFrame
    claims: list[Claim]
    out: Path
    figures: list[Path] = field(default_factory=list)


def parse_lrs(text: str) -> np.ndarray:
    """``"MIN:MAX:COUNT"`` -> COUNT rates spaced geometrically from MIN to MAX."""
    parts = str(text).split(":")
    try:
        lo, hi, count = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise BnlabError(f"learning rates are given as MIN:MAX:COUNT (e.g. {DEFAULT_LRS}), got {text!r}") from None
    if not (0 < lo < hi and math.isfinite(hi) and count >= 2):
        raise BnlabError(f"need 0 < MIN < MAX and COUNT >= 2 for the learning rates, got {text!r}")
    return np.geomspace(lo, hi, count)


def resolve_data(data: str | Path | Dataset, data_dir: str | Path | None = None) -> Dataset:
    """A Dataset as is, an ``.npz`` file (``bnlab.nn.npz.load_npz``) or a dataset name (``load_dataset``)."""
    if isinstance(data, Dataset):
        return data
    if str(data).endswith(".npz"):
        return load_npz(data)
    return load_dataset(str(data), data_dir)


def _sources(model) -> tuple[str, Callable | nn.Module, Callable | nn.Module | None]:
    """(label, source of the model, source of its BN-free twin or None when the model has no BN)."""
    if isinstance(model, str | Path):
        label, factory = str(model), load_factory(str(model))
        probe = factory()
        return label, factory, ((lambda: without_bn(factory())) if has_bn(probe) else None)
    if isinstance(model, nn.Module):
        return type(model).__name__, model, (without_bn(model) if has_bn(model) else None)
    if callable(model):
        probe = model()
        if not isinstance(probe, nn.Module):
            raise BnlabError(f"the model factory must return a torch.nn.Sequential, got {type(probe).__name__}")
        return getattr(model, "__name__", "model"), model, ((lambda: without_bn(model())) if has_bn(probe) else None)
    raise BnlabError(f"a model is a FILE.py:FUNCTION string, a Sequential or a factory, got {type(model).__name__}")


def run_lr_window(
    model,
    data: str | Path | Dataset,
    *,
    lrs: str | Sequence[float] = DEFAULT_LRS,
    seeds: int = 3,
    steps: int = 500,
    optimizer: str = "sgd",
    batch_size: int = 100,
    log_every: int = 50,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "cpu",
) -> LRWindowResult:
    """Measure the learning-rate window of ``model`` (and of its BN-free twin) on ``data``; write tables
    (``tables/final.parquet``, ``history``, ``windows``), a figure and ``summary.json`` under ``out``.

    Everything (model file, layers, data, options) is checked before ``out`` is created."""
    grid = parse_lrs(lrs) if isinstance(lrs, str) else np.asarray(lrs, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise BnlabError("need at least two positive, finite learning rates")
    if optimizer not in OPTIMIZERS:
        raise BnlabError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if seeds < 1 or steps < 1 or log_every < 1:
        raise BnlabError(f"seeds, steps and log_every must be positive, got {seeds}, {steps}, {log_every}")
    dataset = resolve_data(data, data_dir)
    if not 1 <= batch_size <= len(dataset.x_train):
        raise BnlabError(f"batch size must lie in [1, {len(dataset.x_train)}], got {batch_size}")
    label, source, twin = _sources(model)
    variants = {"bn": source, "no-bn": twin} if twin is not None else {"model": source}
    seed_of = [s for s in range(seeds) for _ in grid]
    nets = {}
    for name, src in variants.items():
        shape = dataset.input_shape
        nets[name] = BatchedNet.from_module(src, len(seed_of), seed_of, input_shape=shape, dtype=torch.float32)
        if nets[name].num_classes < dataset.num_classes:
            raise BnlabError(
                f"the model outputs {nets[name].num_classes} scores but the data has {dataset.num_classes} classes"
            )
    file, _, function = label.rpartition(":")
    name = f"{Path(file).stem}-{function}" if file else function
    out = Path(out) if out is not None else Path("bnlab-out") / "lr-window" / f"{name}-{dataset.name}"
    configs = [NetConfig(lr=float(lr), seed=s, optimizer=optimizer) for s in range(seeds) for lr in grid]
    frames = []
    for name, net in nets.items():
        res = train(
            net.spec,
            dataset,
            configs,
            steps=steps,
            batch_size=batch_size,
            log_every=log_every,
            test_size=None,
            device=device,
            model=net.to(device),
        )
        frame = res.history.merge(res.networks[["net", "lr", "seed", "diverged_step"]], on="net")
        frames.append(frame.assign(variant=name))
    history = pd.concat(frames, ignore_index=True)
    final = history[history.step == steps].reset_index(drop=True)
    windows = window_table(final)
    claims = summarise(final, windows)
    for name, table in (("history", history), ("final", final), ("windows", windows)):
        write_parquet_atomic(out / "tables" / f"{name}.parquet", table)
    options = {"lrs": fmt([grid[0], grid[-1], len(grid)]), "seeds": seeds, "steps": steps, "optimizer": optimizer}
    write_json_atomic(
        out / "summary.json",
        {
            "experiment": "lr-window",
            "model": label,
            "data": dataset.name,
            "options": options | {"batch_size": batch_size, "device": device},
            "holds": all(c.holds for c in claims),
            "claims": [c.to_dict() for c in claims],
        },
    )
    with figure_style():
        figures = plot(final, windows, out / "figures", f"{Path(label).name} on {dataset.name}")
    return LRWindowResult(final, history, windows, claims, out, figures)


def _scores(final: pd.DataFrame) -> pd.DataFrame:
    """Final test accuracy per network, NaN for a diverged one (never inside a window)."""
    return final.assign(score=final.test_acc.where(~final.diverged.astype(bool)))


def window_table(final: pd.DataFrame, tols: Sequence[float] = TOLS) -> pd.DataFrame:
    """One row per (variant, seed, tol): window width and ends, best lr and accuracy; ``seed = -1``: the
    seed-mean accuracy curve (what the figure shades)."""
    scored = _scores(final)
    rows = []
    for variant, frame in scored.groupby("variant", sort=False):
        mean = frame.groupby("lr", as_index=False).score.mean()  # NaN if any seed diverged there
        curves = [(int(s), g.sort_values("lr")) for s, g in frame.groupby("seed")] + [(-1, mean)]
        for seed, curve in curves:
            lr, acc = curve.lr.to_numpy(), curve.score.to_numpy()
            best = int(np.nanargmax(acc)) if np.isfinite(acc).any() else None
            for tol in tols:
                w = accuracy_window(lr, acc, tol)
                rows.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "tol": tol,
                        "width": w.width,
                        "lo": w.lo,
                        "hi": w.hi,
                        "best_lr": float(lr[best]) if best is not None else math.nan,
                        "best_acc": float(acc[best]) if best is not None else math.nan,
                    }
                )
    return pd.DataFrame(rows)


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (scipy.stats.bootstrap; one seed: a point)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or not np.isfinite(v).all() or np.ptp(v) == 0:
        return float(np.min(v)), float(np.max(v))
    res = stats.bootstrap(
        (v,), np.mean, confidence_level=confidence, method="percentile", random_state=np.random.default_rng(0)
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise(final: pd.DataFrame, windows: pd.DataFrame) -> list[Claim]:
    """Claims ``lr-window.best-lr.V``, ``lr-window.width-Npct.V`` (V = bn, no-bn or model) and
    ``lr-window.bn-wider-Npct`` (defined in docs/claims.md)."""
    claims = []
    grid = np.sort(final.lr.unique())
    per_seed = windows[windows.seed >= 0]
    for variant in windows.variant.unique():
        mean = windows[(windows.variant == variant) & (windows.seed == -1)].iloc[0]
        edge = mean.best_lr in (grid[0], grid[-1])
        claims.append(
            Claim(
                id=f"lr-window.best-lr.{variant}",
                claim=f"Best learning rate of the {_name(variant)} (seed-mean final test accuracy)",
                quantity="learning rate",
                predicted=None,
                measured=mean.best_lr,
                holds=True,
                detail=f"best accuracy {mean.best_acc:.3f}"
                + ("; at the edge of the grid: widen --lrs" if edge else ""),
            )
        )
        for tol in TOLS:
            sel = per_seed[(per_seed.variant == variant) & (per_seed.tol == tol)].sort_values("seed")
            widths = sel.width
            low, high = seed_interval(widths)
            clipped = bool(np.any(np.isclose(sel.lo, grid[0]) | np.isclose(sel.hi, grid[-1])))
            claims.append(
                Claim(
                    id=f"lr-window.width-{_pct(tol)}.{variant}",
                    claim=f"Learning-rate window of the {_name(variant)}, accuracy within {tol:g} of the best",
                    quantity="decades (mean over seeds)",
                    predicted=None,
                    measured=float(widths.mean()),
                    holds=True,
                    ci_low=low,
                    ci_high=high,
                    detail=f"per seed {fmt(np.round(widths, 2))}; 95% bootstrap interval [{low:.2f}, {high:.2f}]"
                    + ("; reaches the end of the grid: a lower bound" if clipped else ""),
                )
            )
    if {"bn", "no-bn"} <= set(windows.variant):
        for tol in TOLS:
            sel = per_seed[per_seed.tol == tol].sort_values("seed")
            bn, plain = sel[sel.variant == "bn"].width.to_numpy(), sel[sel.variant == "no-bn"].width.to_numpy()
            claims.append(
                wider_than(
                    id=f"lr-window.bn-wider-{_pct(tol)}",
                    claim=f"BN widens the learning-rate window (accuracy within {tol:g} of the best)",
                    quantity="decades, BN minus no BN (paired by seed)",
                    values=bn,
                    baseline=plain,
                    detail=f"BN {bn.mean():.2f} vs no BN {plain.mean():.2f} decades",
                )
            )
    return claims


def _pct(tol: float) -> str:
    return f"{tol * 100:g}pct"


def _name(variant: str) -> str:
    return {"bn": "model with BN", "no-bn": "BN-free twin", "model": "model"}[variant]


def plot(final: pd.DataFrame, windows: pd.DataFrame, folder: Path, title: str) -> list[Path]:
    """Final test accuracy and train loss vs learning rate: median over seeds, min-max band; the seed-mean
    curve's windows shaded (light: within 0.05, darker: within 0.01)."""
    fig, (ax_acc, ax_loss) = new_figure(ncols=2)
    scored = _scores(final)
    colours = {"bn": METHOD_COLOURS["bn"], "no-bn": METHOD_COLOURS["no-bn"], "model": METHOD_COLOURS["bn"]}
    for variant, frame in scored.groupby("variant", sort=False):
        colour, style = colours[variant], "--" if variant == "no-bn" else "-"
        for ax, column in ((ax_acc, "score"), (ax_loss, "train_loss")):
            grouped = frame.groupby("lr")[column]
            xs = np.asarray(grouped.median().index, dtype=float)
            ax.plot(xs, grouped.median(), color=colour, ls=style, marker="o", ms=2.5, lw=1.4, label=_name(variant))
            ax.fill_between(xs, grouped.min(), grouped.max(), color=colour, alpha=0.15, lw=0)
        for tol, alpha in ((0.05, 0.08), (0.01, 0.12)):
            row = windows[(windows.variant == variant) & (windows.seed == -1) & (windows.tol == tol)]
            if len(row) and np.isfinite(row.lo.iloc[0]):
                ax_acc.axvspan(row.lo.iloc[0], row.hi.iloc[0], color=colour, alpha=alpha, lw=0)
    for ax in (ax_acc, ax_loss):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
    ax_loss.set_yscale("log")
    ax_acc.set_ylabel("final test accuracy")
    ax_loss.set_ylabel("final train loss (batch)")
    ax_acc.set_title(title)
    ax_loss.set_title("median over seeds, band: min to max")
    ax_acc.legend(fontsize=8, title="shaded: within 0.05 / 0.01", title_fontsize=7)
    return save(fig, folder, "lr_window")
