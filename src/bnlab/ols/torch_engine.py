"""GD and BNGD steps in torch: the eager reference (every device) and ``torch.compile``-fused segments (GPU).

Same rules as the numba loops (``bnlab.ols.kernels``) and the same freezing: a run whose next state would be out
of range keeps its current state, and ``diverged_at`` records the step it did not take. Everything is
branch-free (``torch.where``), so a step never synchronises with the host.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from bnlab.ols.kernels import (
    bngd_coefficients,
    bngd_error,
    bngd_excess,
    bngd_w_next,
    bngd_within_bounds,
    effective_step,
    gd_factor,
)

# Steps fused into one compiled call: long enough to amortise the launch, short enough to compile quickly.
FUSED_STEPS = 8


def _tensor(arr, B: int | None, kw) -> torch.Tensor:
    arr = np.asarray(arr)
    if B is not None:
        arr = np.broadcast_to(arr, (B, *arr.shape[1:]))
    return torch.as_tensor(np.array(arr, copy=True, order="C"), **kw)  # a copy: inputs may be read-only views


def _drive(advance, state, recorded, record, compiled: bool):
    """Run ``advance(state, k, n)`` from step 0 to ``recorded[-1]``, calling ``record(t, state)`` at each
    recorded step; with ``compiled``, in compiled segments of ``FUSED_STEPS`` steps (single steps to land on a
    recorded step)."""
    device = state[0].device
    segment = _with_eager_fallback(advance) if compiled else advance
    record(0, state)
    for t in range(1, len(recorded)):
        k, todo = int(recorded[t - 1]), int(recorded[t] - recorded[t - 1])
        while todo > 0:
            n = FUSED_STEPS if compiled and todo >= FUSED_STEPS else 1
            state = segment(state, torch.tensor(k, device=device), n)
            k, todo = k + n, todo - n
        record(t, state)
    return state


# -- GD --------------------------------------------------------------------------------------------------
def gd_advance(state, k, n: int):
    """``n`` GD steps of ``(v, factor, gap, bound, alive, diverged_at, lam, floor)`` from step ``k`` (a 0-d tensor)."""
    v, factor, gap, bound, alive, diverged_at, lam, floor = state
    for i in range(n):
        v_next = v * factor
        v_next = torch.where(v_next.abs() < floor, 0.0, v_next)  # ``kernels.gd_flush``: no subnormal walks
        gap_next = 0.5 * (v_next * v_next) @ lam
        at_optimum = gap_next < floor  # set to the optimum exactly (``kernels.gd_floor``)
        v_next = torch.where(at_optimum[:, None], 0.0, v_next)
        gap_next = torch.where(at_optimum, 0.0, gap_next)
        freeze = alive & ~(gap_next <= bound)
        v = torch.where(freeze[:, None], v, v_next)
        gap = torch.where(freeze, gap, gap_next)
        factor = torch.where(freeze[:, None], 1.0, factor)  # a frozen run's later steps copy it exactly
        diverged_at = torch.where(freeze, k + i + 1, diverged_at)
        alive = alive & ~freeze
    return v, factor, gap, bound, alive, diverged_at, lam, floor


def gd_run(lam, v0, eps, recorded, bound, floor, B, device, dtype, compiled: bool):
    """GD from ``v0`` (B or 1, d): returns ``(gap (T, B), v_final (B, d), diverged_at (B,))`` as NumPy."""
    kw = {"dtype": dtype, "device": device}
    lam_t, v = _tensor(lam, None, kw), _tensor(v0, B, kw)
    factor = gd_factor(_tensor(eps, B, kw)[:, None], lam_t)
    gap = 0.5 * (v * v) @ lam_t
    alive = torch.ones(B, dtype=torch.bool, device=device)
    diverged_at = torch.full((B,), -1, dtype=torch.long, device=device)
    out = torch.empty((len(recorded), B), **kw)

    def record(t, state):
        out[t] = state[2]

    state = (v, factor, gap, _tensor(bound, B, kw), alive, diverged_at, lam_t, floor)
    state = _drive(gd_advance, state, recorded, record, compiled)
    return out.cpu().numpy(), state[0].cpu().numpy(), state[5].cpu().numpy()


# -- BNGD ------------------------------------------------------------------------------------------------
def bngd_advance(state, k, n: int):
    """``n`` BNGD steps of ``(w, a, w^T g, ||w||_H^2, alive, diverged_at)`` from step ``k`` (a 0-d tensor)."""
    w, a, wg, whw, alive, diverged_at, params = state
    eps, eps_a, lam, g, u, a_bound, whw_bound = params
    for i in range(n):
        c, r, a_next = bngd_coefficients(a, wg, whw, torch.sqrt(whw), eps, eps_a)
        c = torch.where(alive, c, 0.0)
        w_next = bngd_w_next(w, c[:, None], lam * bngd_error(u, r[:, None], w))
        a_next = torch.where(alive, a_next, a)
        wg_next, whw_next = w_next @ g, torch.linalg.vecdot(w_next, w_next * lam)
        freeze = alive & ~bngd_within_bounds(a_next, whw_next, a_bound, whw_bound)
        w = torch.where(freeze[:, None], w, w_next)
        a, wg, whw = (torch.where(freeze, old, new) for old, new in ((a, a_next), (wg, wg_next), (whw, whw_next)))
        diverged_at = torch.where(freeze, k + i + 1, diverged_at)
        alive = alive & ~freeze
    return w, a, wg, whw, alive, diverged_at, params


def bngd_observe(w, a, wg, whw, eps, lam, u):
    """Stacked ``(J - J*, a, ||w||, ||w||_H, eps_hat)`` of a batch, shape (5, B)."""
    e = bngd_error(u, (wg / whw)[:, None], w)
    norm_h = torch.sqrt(whw)
    excess = bngd_excess(a, wg, norm_h, torch.linalg.vecdot(e, lam * e))
    return torch.stack([excess, a, torch.linalg.vector_norm(w, dim=1), norm_h, effective_step(a, whw, eps)])


def bngd_run(lam, g, u, w0, a0, eps, eps_a, recorded, a_bound, whw_bound, B, device, dtype, compiled: bool):
    """BNGD: returns ``(observed (T, 5, B), w_final (B, d), a_final (B,), diverged_at (B,))`` as NumPy."""
    kw = {"dtype": dtype, "device": device}
    lam_t, g_t, u_t = (_tensor(x, None, kw) for x in (lam, g, u))
    w, a, eps_t, eps_a_t = (_tensor(x, B, kw) for x in (w0, a0, eps, eps_a))
    wg, whw = w @ g_t, torch.linalg.vecdot(w, w * lam_t)
    alive = bngd_within_bounds(a, whw, a_bound, whw_bound)
    diverged_at = torch.where(alive, -1, 0).to(torch.long)
    out = torch.empty((len(recorded), 5, B), **kw)

    def record(t, state):
        out[t] = bngd_observe(*state[:4], eps_t, lam_t, u_t)

    params = (eps_t, eps_a_t, lam_t, g_t, u_t, a_bound, whw_bound)
    state = _drive(bngd_advance, (w, a, wg, whw, alive, diverged_at, params), recorded, record, compiled)
    w, a, _, _, _, diverged_at, _ = state
    return out.cpu().numpy(), w.cpu().numpy(), a.cpu().numpy(), diverged_at.cpu().numpy()


# -- compilation ----------------------------------------------------------------------------------------
@functools.cache
def _with_eager_fallback(fn):
    """``torch.compile(fn)``, falling back to eager ``fn`` (with one warning) where compiling fails, e.g.
    on a machine without a C++ compiler; the results are the same, only slower."""
    compiled = torch.compile(fn, dynamic=False)

    def call(*args):
        if fn.__name__ in _COMPILE_FAILED:
            return fn(*args)
        try:
            return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any backend failure means: run eagerly
            _COMPILE_FAILED.add(fn.__name__)
            warnings.warn(f"torch.compile failed ({type(exc).__name__}); running eagerly", stacklevel=2)
            return fn(*args)

    return call


_COMPILE_FAILED: set[str] = set()
