"""Independent references for the OLS engine: plain NumPy, one run at a time, with the full matrix H."""

from __future__ import annotations

import numpy as np


def bngd_loop(H, g, c, w0, a0, eps, eps_a, steps):
    """SPEC section 1 verbatim: both updates from (a_k, w_k), with the full H (no eigenbasis).

    Returns per-step arrays of J - J*, a_k, ||w_k||, and the final w.
    """
    u = np.linalg.solve(H, g)
    j_star = (c - u @ H @ u) / 2
    w, a = np.array(w0, dtype=float), float(a0)
    gaps, As, norms = [], [], []
    for k in range(steps + 1):
        norm_h = np.sqrt(w @ H @ w)
        wg = w @ g
        gaps.append((c - 2 * a * wg / norm_h + a * a) / 2 - j_star)
        As.append(a)
        norms.append(np.linalg.norm(w))
        if k == steps:
            break
        a, w = a + eps_a * (wg / norm_h - a), w + (eps * a / norm_h) * (g - (wg / norm_h**2) * (H @ w))
    return np.array(gaps), np.array(As), np.array(norms), w


def gd_closed_form(H, g, w0, eps, k):
    """``w_k - u = (I - eps H)^k (w_0 - u)``; returns ``(w_k - u, w_k)``.

    The error is returned directly: recovering it as ``w_k - u`` would cancel digits near convergence.
    """
    u = np.linalg.solve(H, g)
    v = np.linalg.matrix_power(np.eye(len(g)) - eps * H, k) @ (np.asarray(w0) - u)
    return v, u + v
