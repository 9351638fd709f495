"""Shared figure style and helpers: every figure is written as PNG (for the report) and SVG (for papers)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GD_COLOUR = "#d95f02"
BNGD_COLOUR = "#1b9e77"
THEORY_COLOUR = "#444444"
METHOD_COLOURS = {"gd": GD_COLOUR, "bngd": BNGD_COLOUR, "no-bn": GD_COLOUR, "bn": BNGD_COLOUR}

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 130,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "font.size": 10,
        "axes.titlesize": 11,
        "legend.frameon": False,
    }
)


def new_figure(ncols: int = 1, width: float = 5.2, height: float = 3.6):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def save(fig, folder: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.svg``; return the PNG path first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def seed_band(ax, frame: pd.DataFrame, x: str, y: str, colour: str, label: str, logy: bool = True) -> None:
    """Median over seeds as a line, min-max over seeds as a shaded band."""
    grouped = frame.groupby(x)[y]
    xs = np.asarray(grouped.median().index, dtype=float)
    med, lo, hi = grouped.median().to_numpy(), grouped.min().to_numpy(), grouped.max().to_numpy()
    ax.plot(xs, med, color=colour, label=label, lw=1.6)
    ax.fill_between(xs, lo, hi, color=colour, alpha=0.2, lw=0)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
