"""Summaries of learning-rate sweeps shared by the experiments."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnlab.errors import BnlabError


def lr_window_decades(
    lrs: Sequence[float],
    scores: Sequence[float],
    tol: float = 0.05,
    relative: bool = False,
    higher_is_better: bool = True,
) -> float:
    """Width in decades, log10(lr_max / lr_min), of the learning rates whose score is within ``tol`` of the best.

    Within means score >= best - tol (absolute, default) or score >= best (1 - tol) (``relative``); reversed
    when lower is better. NaN scores (diverged runs) are never within. The window spans the smallest and largest
    qualifying rate, gaps included; several seeds per rate should be averaged by the caller first. A single
    qualifying rate gives 0.
    """
    lr = np.asarray(lrs, dtype=float)
    s = np.asarray(scores, dtype=float)
    if lr.shape != s.shape or lr.ndim != 1 or lr.size == 0:
        raise BnlabError(f"lrs and scores must be equal-length non-empty vectors, got {lr.shape} and {s.shape}")
    if np.any(lr <= 0):
        raise BnlabError("learning rates must be positive to measure a window in decades")
    if not np.any(np.isfinite(s)):
        return 0.0
    sign = 1.0 if higher_is_better else -1.0
    best = np.nanmax(sign * s)
    bound = best - abs(best) * tol if relative else best - tol
    good = np.isfinite(s) & (sign * s >= bound)
    return float(np.log10(lr[good].max() / lr[good].min()))
