"""Shared figure style and helpers: every figure is written as PNG (for the report) and SVG (for papers).

No global state: figures are ``matplotlib.figure.Figure`` objects on an Agg canvas (never pyplot, never a
window), and the house style is applied only inside :func:`figure_style` (``matplotlib.rc_context``), around
each experiment's ``plot``; importing this module changes neither the backend nor ``rcParams``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

GD_COLOUR = "#d95f02"
BNGD_COLOUR = "#1b9e77"
THEORY_COLOUR = "#444444"
METHOD_COLOURS = {"gd": GD_COLOUR, "bngd": BNGD_COLOUR, "no-bn": GD_COLOUR, "bn": BNGD_COLOUR}
# PNGs are written at twice the CSS pixel density (1 inch of figure = PNG_DPI / 2 CSS pixels): the report shows
# them at half their pixel size, sharp on high-density screens and never upscaled.
PNG_DPI = 192
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": PNG_DPI,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 10,
    "axes.titlesize": 11,
    "legend.frameon": False,
}


@contextmanager
def figure_style() -> Iterator[None]:
    """The house style, for the figures made inside the block only."""
    with mpl.rc_context(STYLE):
        yield


def new_figure(ncols: int = 1, width: float = 5.2, height: float = 3.6) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def save(fig: Figure, folder: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.svg``; return the PNG path first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    for path in paths:
        fig.savefig(path)
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


def sentinel(ax, at: float, label: str) -> None:
    """A labelled dotted line at ``at``, where runs without a finite value (diverged, or never reaching the
    tolerance) are drawn: never an unlabelled stand-in value."""
    ax.axhline(at, color="#b2182b", ls=":", lw=1, label=label)
