"""The learning-rate window: one definition for least squares and for networks.

Given a cost on a geometric grid of learning rates ``x`` (lower is better), with ``c* = min c``, the window is

    W = {x : c(x) <= c* + allowance},

least squares: ``c = log(steps to tolerance)`` and ``allowance = log F`` (within a factor F of the fewest steps);
networks: ``c = -accuracy`` and ``allowance = tol`` (within ``tol`` of the best accuracy).

On the grid ``W`` is a union of runs of consecutive points. Each run's ends are placed where ``c`` crosses
``c* + allowance``, by linear interpolation in ``log10 x`` with the first point outside; or half a grid step out
where that point has no finite cost (a run that never reached the tolerance: a cliff, such as GD's at
``2 / lambda_max``); or at the last grid point where the window reaches the grid's end. The error is at most
half a grid step per end.

- ``width``: the total length of the runs, ``sum log10(hi / lo)`` (the measure of the window, in decades);
- ``span``: from the lowest to the highest end, ``log10(max hi / min lo)``, bridging gaps.

They differ only where the cost has a bump above the allowance between good values (BNGD has one, around the
eps where its effective step first overshoots the stability edge and ``||w||`` must grow before it converges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlab.errors import BnlabError


@dataclass(frozen=True)
class Window:
    runs: tuple[tuple[float, float], ...]  # (lo, hi) of each run, ascending; empty if no cost was finite

    @property
    def width(self) -> float:
        """Decades covered by the runs (NaN if empty)."""
        return float(sum(np.log10(hi / lo) for lo, hi in self.runs)) if self.runs else float("nan")

    @property
    def span(self) -> float:
        """Decades from the lowest to the highest end (NaN if empty)."""
        return float(np.log10(self.hi / self.lo)) if self.runs else float("nan")

    @property
    def lo(self) -> float:
        return self.runs[0][0] if self.runs else float("nan")

    @property
    def hi(self) -> float:
        return self.runs[-1][1] if self.runs else float("nan")


def lr_window(x, cost, allowance: float, sustain: int = 1) -> Window:
    """The window ``{x : cost(x) <= best + allowance}`` with interpolated ends (see the module docstring).
    Non-finite costs (inf, NaN) are never inside.

    ``best`` is the lowest cost that ``sustain`` consecutive grid points all reach (1: the minimum). A lone
    lucky point is not a usable learning rate: on spectra with a few large eigenvalues, BNGD's transient can
    pass through ``eps_hat = 1 / lambda*_max`` at one eps and wipe out the top modes, converging several times
    faster than its neighbours (``bnlab.ols.modes``); ``sustain=3`` measures the window from the band instead."""
    x = np.asarray(x, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if x.shape != cost.shape or x.ndim != 1 or x.size == 0:
        raise BnlabError(f"x and cost must be equal-length non-empty vectors, got {x.shape} and {cost.shape}")
    if np.any(x <= 0):
        raise BnlabError("learning rates must be positive to measure a window in decades")
    order = np.argsort(x)
    log_x, cost = np.log10(x[order]), cost[order]
    finite = np.isfinite(cost)
    if not finite.any():
        return Window(())
    level = best_level(cost, sustain) + allowance
    inside = finite & (cost <= level)
    # Run boundaries: where ``inside`` switches on (starts) and off (ends, inclusive).
    padded = np.diff(np.concatenate([[0], inside.astype(int), [0]]))
    starts, ends = np.flatnonzero(padded == 1), np.flatnonzero(padded == -1) - 1
    runs = tuple(
        (10 ** _edge(log_x, cost, lo, lo - 1, level), 10 ** _edge(log_x, cost, hi, hi + 1, level))
        for lo, hi in zip(starts, ends, strict=True)
    )
    return Window(runs)


def best_level(cost, sustain: int = 1) -> float:
    """The lowest cost that ``sustain`` consecutive points (in grid order) all reach; the minimum where no run of
    ``sustain`` finite points exists; NaN where none is finite."""
    cost = np.asarray(cost, dtype=np.float64)
    finite = np.isfinite(cost)
    if not finite.any():
        return float("nan")
    if sustain > 1:
        padded = np.concatenate([np.full(sustain - 1, np.inf), np.where(finite, cost, np.inf)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, sustain).max(axis=1)
        if np.isfinite(windows.min()):
            return float(windows.min())
    return float(cost[finite].min())


def _edge(log_x: np.ndarray, cost: np.ndarray, last_in: int, first_out: int, level: float) -> float:
    if first_out < 0 or first_out >= len(log_x):
        return float(log_x[last_in])  # the window reaches the end of the grid
    if not np.isfinite(cost[first_out]):
        return float((log_x[last_in] + log_x[first_out]) / 2)  # a cliff: half a grid step out
    c_in, c_out = cost[last_in], cost[first_out]
    t = (level - c_in) / (c_out - c_in) if c_out != c_in else 0.0
    return float(log_x[last_in] + t * (log_x[first_out] - log_x[last_in]))


def steps_window(eps, steps, factor: float, sustain: int = 1) -> Window:
    """Least squares: eps whose steps to tolerance are within ``factor`` of the fewest (``inf``: never reached)
    (of the fewest that ``sustain`` neighbouring eps all reach)."""
    with np.errstate(divide="ignore"):
        return lr_window(eps, np.log(np.asarray(steps, dtype=np.float64)), float(np.log(factor)), sustain)


def accuracy_window(lrs, accuracy, tol: float) -> Window:
    """Networks: learning rates whose accuracy is within ``tol`` (absolute) of the best (NaN: never inside)."""
    return lr_window(lrs, -np.asarray(accuracy, dtype=np.float64), tol)
