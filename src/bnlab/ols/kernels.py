"""The GD and BNGD update rules (SPEC section 1, in H's eigenbasis) and their fused CPU loops (numba).

The rules are plain arithmetic on per-run values, so the same functions serve the eager/compiled torch path
(on (B,) tensors) and the numba loops (on scalars): one source of truth for each formula. They live in this
file, beside the loops that inline them, because numba's disk cache is invalidated by this file's timestamp
only; a rule kept elsewhere could go stale in the cache.

Fused loop layout: runs are cut into blocks of ``lanes``; a block's state is a ``(d, lanes)`` array, so the
inner loop runs across independent runs and vectorises without reordering any floating-point sum (results do
not depend on the vector width). Each step is one pass that writes ``w_{k+1}`` into a second buffer and
accumulates its moments ``w^T g`` and ``||w||_H^2``, which the next step and the blow-up check both use. A run
whose next state would leave the safe range is frozen at its last state: its column is restored from the
other buffer and its coefficients become zero, so later passes copy it unchanged. A recorded step uses a
variant of the pass that also sums ``||e||_H^2`` and ``||w||^2`` of ``w_k`` (the step needs ``e`` anyway) and
writes the recorded quantities into the caller's preallocated buffer, so recording every step keeps the loop
fused and costs two extra sums per element.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

# Runs per block (the inner, vectorised loop): measured on an AVX-512 Xeon, d = 100. Wider blocks leave L1 (GD
# keeps three (d, lanes) arrays, BNGD two); 16 for BNGD would fall into the vectoriser's scalar remainder loop.
GD_LANES = 16
BNGD_LANES = 24


# -- the rules (shared by torch and numba) --------------------------------------------------------------
def bngd_coefficients(a, wg, whw, norm_h, eps, eps_a):
    """One BNGD step from ``(a_k, w_k)`` as per-run values ``(c, r, a_{k+1})``.

    SPEC: ``w_{k+1} = w + (eps a / ||w||_H) (g - (w^T g / ||w||_H^2) H w)``. With ``g = H u`` this is
    ``w + c H e``, ``c = eps a / ||w||_H``, ``e = u - r w``, ``r = w^T g / ||w||_H^2``: the error vector ``e`` is
    also the one the excess loss needs, so one pass over ``w`` gives the step and the recorded loss.
    ``a_{k+1} = a + eps_a (w^T g / ||w||_H - a)``.
    """
    return eps * a / norm_h, wg / whw, a + eps_a * (wg / norm_h - a)


def bngd_error(u, r, w):
    """``e = u - r w`` (elementwise): ``w``'s error after the best rescaling."""
    return u - r * w


def bngd_w_next(w, c, he):
    """``w + c H e`` (elementwise; ``he = lambda * e``)."""
    return w + c * he


def bngd_within_bounds(a, whw, a_bound, whw_bound):
    """True where ``|a|`` and ``||w||_H^2`` are finite and within the bounds (NaN compares False)."""
    return (abs(a) <= a_bound) & (whw <= whw_bound)


def bngd_excess(a, wg, norm_h, e_h2):
    """``J - J* = ((a - p)^2 + ||e||_H^2) / 2``, ``p = w^T g / ||w||_H``, ``e = u - (w^T g / ||w||_H^2) w``."""
    p = wg / norm_h
    return 0.5 * ((a - p) * (a - p) + e_h2)


def effective_step(a, whw, eps):
    """``eps_hat = eps a^2 / ||w||_H^2`` (F6)."""
    return eps * a * a / whw


def gd_factor(eps, lam):
    """GD contracts ``v = w - u`` coordinate-wise: ``v_{k+1} = (1 - eps lambda) v_k``."""
    return 1.0 - eps * lam


def blowup_bounds(max_value: float) -> tuple[float, float, float, float]:
    """``(a_bound, whw_bound, gap_growth, gap_cap)`` for a floating type whose largest value is ``max_value``.

    In float64: ``|a| <= 1e100``, ``||w||_H^2 <= 1e250``, a GD gap at most ``1e100`` times its start and at most
    ``1e250``. Other types scale the exponents by their range (float32: 1e12.5, 1e31.2), so every bound sits far
    below overflow in its own type.
    """
    scale = math.log10(max_value) / math.log10(np.finfo(np.float64).max)
    return 10.0 ** (100 * scale), 10.0 ** (250 * scale), 10.0 ** (100 * scale), 10.0 ** (250 * scale)


def gd_flush(x, flush):
    """``x``, or zero where ``|x| < flush`` (``gd_floor``): a fast mode of GD decays coordinate by coordinate to
    subnormal numbers while the slow ones hold the gap up (x86 CPUs process subnormals ~100x slower: a kappa =
    1e4 sweep ran at 9.5 ns per run-dim-step instead of ~0.4); such a coordinate's part of the gap,
    ``lambda x^2 < lambda tiny``, is far below the gap's own resolution while the run is above ``gd_floor``."""
    return x if abs(x) >= flush else x * 0.0


def gd_floor(tiny: float) -> float:
    """The GD gap below which a run is set to the optimum exactly: ``sqrt(tiny)`` of the type (1.5e-154 in
    float64). Below it the error's squares are subnormal numbers, which x86 CPUs process ~100x slower, and the
    gap is far below any tolerance a sweep measures (float64 runs start at gaps of order 1..d)."""
    return math.sqrt(tiny)


# -- the fused loops ------------------------------------------------------------------------------------
# Each loop takes its block width ``lanes`` as a runtime value: numba disables LLVM's SLP vectoriser, so a
# compile-time width would be unrolled into scalar code; a runtime width keeps the inner loop a vector loop.
def _bngd_loop(lam, g, u, w0, a0, eps, eps_a, recorded, a_bound, whw_bound, lanes, out, w_final, a_final, diverged_at):
    """BNGD for ``B`` runs (``B`` a multiple of ``lanes``); writes ``out[t, :, run]`` =
    ``(J - J*, a, ||w||, ||w||_H, eps_hat)`` at step ``recorded[t]``, the final state and ``diverged_at``."""
    d, B, dtype = lam.shape[0], w0.shape[0], w0.dtype
    steps = recorded[-1]
    for blk in numba.prange(B // lanes):
        runs = slice(blk * lanes, (blk + 1) * lanes)
        w, w_next = np.empty((d, lanes), dtype), np.empty((d, lanes), dtype)
        w[:] = w0[runs].T  # not np.ascontiguousarray: its 'A' layout type would spread to both buffers
        a, eps_b, eps_a_b, div = a0[runs].copy(), eps[runs], eps_a[runs], diverged_at[runs]
        c, r, a_next = np.zeros(lanes, dtype), np.zeros(lanes, dtype), np.empty(lanes, dtype)
        wg, whw = np.empty(lanes, dtype), np.empty(lanes, dtype)
        wg_next, whw_next = np.empty(lanes, dtype), np.empty(lanes, dtype)
        e_h2, ww = np.empty(lanes, dtype), np.empty(lanes, dtype)
        _nb_bngd_pass(lam, g, u, w, w_next, c, r, wg, whw)  # c = 0: the moments of w
        alive = np.ones(lanes, np.bool_)
        for j in range(lanes):
            alive[j] = _nb_bngd_within_bounds(a[j], whw[j], a_bound, whw_bound)
            div[j] = -1 if alive[j] else 0
        t = 0
        for k in range(steps + 1):
            for j in range(lanes):  # branch-free so that it vectorises; a frozen run keeps c = 0
                cj, r[j], a_next[j] = _nb_bngd_coefficients(
                    a[j], wg[j], whw[j], math.sqrt(whw[j]), eps_b[j], eps_a_b[j]
                )
                c[j] = cj if alive[j] else 0.0
            observe = k == recorded[t]
            if k == steps:
                c[:] = 0.0  # the last recorded state: observe only
            if observe:
                _nb_bngd_observed_pass(lam, g, u, w, w_next, c, r, wg_next, whw_next, e_h2, ww)
                _nb_bngd_record(a, wg, whw, e_h2, ww, eps_b, out[t, :, runs])
                t += 1
            else:
                _nb_bngd_pass(lam, g, u, w, w_next, c, r, wg_next, whw_next)
            if k == steps:
                break
            for j in range(lanes):
                if not alive[j]:
                    continue
                if _nb_bngd_within_bounds(a_next[j], whw_next[j], a_bound, whw_bound):
                    a[j], wg[j], whw[j] = a_next[j], wg_next[j], whw_next[j]
                else:  # freeze at step k: keep (a_k, w_k); c = 0 makes later passes copy it
                    alive[j] = False
                    div[j] = k + 1
                    c[j] = 0.0
                    w_next[:, j] = w[:, j]
            w, w_next = w_next, w
        a_final[runs] = a
        w_final[runs] = w.T


def _bngd_pass(lam, g, u, w, w_next, c, r, wg_next, whw_next):
    """``w_next = w + c H e`` (``e = u - r w``) for a block ``(d, lanes)``, with ``w_next^T g``, ``||w_next||_H^2``."""
    d, lanes = w.shape
    wg_next[:], whw_next[:] = 0.0, 0.0
    for i in range(d):
        lam_i, g_i, u_i = lam[i], g[i], u[i]  # hoisted by hand: LLVM cannot prove the stores leave them alone
        for j in range(lanes):
            y = _nb_bngd_w_next(w[i, j], c[j], lam_i * _nb_bngd_error(u_i, r[j], w[i, j]))
            w_next[i, j] = y
            wg_next[j] += y * g_i
            whw_next[j] += y * (y * lam_i)


def _bngd_observed_pass(lam, g, u, w, w_next, c, r, wg_next, whw_next, e_h2, ww):
    """``_bngd_pass`` that also sums ``||e||_H^2`` and ``||w||^2`` of ``w``: the step and the record in one pass."""
    d, lanes = w.shape
    wg_next[:], whw_next[:], e_h2[:], ww[:] = 0.0, 0.0, 0.0, 0.0
    for i in range(d):
        lam_i, g_i, u_i = lam[i], g[i], u[i]
        for j in range(lanes):
            x = w[i, j]
            e = _nb_bngd_error(u_i, r[j], x)
            he = lam_i * e
            y = _nb_bngd_w_next(x, c[j], he)
            w_next[i, j] = y
            wg_next[j] += y * g_i
            whw_next[j] += y * (y * lam_i)
            e_h2[j] += e * he
            ww[j] += x * x


def _bngd_record(a, wg, whw, e_h2, ww, eps, out_t):
    """``(J - J*, a, ||w||, ||w||_H, eps_hat)`` of one block into ``out_t`` (5, lanes)."""
    for j in range(a.shape[0]):
        norm_h = math.sqrt(whw[j])
        out_t[0, j] = _nb_bngd_excess(a[j], wg[j], norm_h, e_h2[j])
        out_t[1, j] = a[j]
        out_t[2, j] = math.sqrt(ww[j])
        out_t[3, j] = norm_h
        out_t[4, j] = _nb_effective_step(a[j], whw[j], eps[j])


def _gd_loop(lam, v0, eps, recorded, bound, floor, lanes, out, v_final, diverged_at):
    """GD on ``v = w - u`` for ``B`` runs (a multiple of ``lanes``); ``out[t, run]`` = ``J0 - J*`` at step
    ``recorded[t]``. A run whose next gap would pass its ``bound`` is frozen; one whose gap falls below ``floor``
    (``gd_floor``) is at the optimum to the type's resolution and is set to it exactly."""
    d, B, dtype = lam.shape[0], v0.shape[0], v0.dtype
    steps = recorded[-1]
    for blk in numba.prange(B // lanes):
        runs = slice(blk * lanes, (blk + 1) * lanes)
        v, v_next = np.empty((d, lanes), dtype), np.empty((d, lanes), dtype)
        v[:] = v0[runs].T
        factor = np.ones((d, lanes), dtype)
        gap, gap_next = np.empty(lanes, dtype), np.empty(lanes, dtype)
        _nb_gd_pass(lam, v, v_next, factor, gap, 0.0)  # unit factors, nothing flushed: the initial gap
        for i in range(d):
            for r in range(lanes):
                factor[i, r] = _nb_gd_factor(eps[blk * lanes + r], lam[i])
        bound_b, div = bound[runs], diverged_at[runs]
        alive = np.ones(lanes, np.bool_)
        div[:] = -1
        t = 0
        for k in range(steps + 1):
            if k == recorded[t]:
                out[t, runs] = gap
                t += 1
            if k == steps:
                break
            _nb_gd_pass(lam, v, v_next, factor, gap_next, floor)
            for r in range(lanes):
                if not alive[r]:
                    continue
                if gap_next[r] < floor:  # at the optimum: zero, not a walk through subnormal numbers
                    v_next[:, r] = 0.0
                    gap[r] = 0.0
                elif gap_next[r] <= bound_b[r]:
                    gap[r] = gap_next[r]
                else:  # freeze at step k; a factor of one makes later passes copy the column exactly
                    alive[r] = False
                    div[r] = k + 1
                    v_next[:, r] = v[:, r]
                    factor[:, r] = 1.0
            v, v_next = v_next, v
        v_final[runs] = v.T


def _gd_pass(lam, v, v_next, factor, gap_next, flush):
    """``v_next = factor * v`` for a block ``(d, lanes)``, with the gap ``v_next^T H v_next / 2``; a coordinate
    below ``flush`` (``gd_floor``) is set to zero (``gd_flush``)."""
    d, lanes = v.shape
    for r in range(lanes):
        gap_next[r] = 0.0
    for i in range(d):
        lam_i = lam[i]
        for r in range(lanes):
            x = _nb_gd_flush(v[i, r] * factor[i, r], flush)
            v_next[i, r] = x
            gap_next[r] += (x * x) * lam_i
    for r in range(lanes):
        gap_next[r] *= 0.5


# -- compilation ----------------------------------------------------------------------------------------
# No fast-math, not even FMA contraction: every elementwise rule then rounds exactly as torch's separate ops do,
# and the engines differ only in the order of their sums (contraction bought under 10% here).
_jit = functools.partial(numba.njit, fastmath=False, error_model="numpy")
_nb_bngd_coefficients = _jit(bngd_coefficients)
_nb_bngd_w_next = _jit(bngd_w_next)
_nb_bngd_error = _jit(bngd_error)
_nb_bngd_within_bounds = _jit(bngd_within_bounds)
_nb_bngd_excess = _jit(bngd_excess)
_nb_effective_step = _jit(effective_step)
_nb_gd_factor = _jit(gd_factor)
_nb_gd_flush = _jit(gd_flush)
_nb_bngd_record = _jit(_bngd_record)
_nb_bngd_pass = _jit(_bngd_pass)
_nb_bngd_observed_pass = _jit(_bngd_observed_pass)
_nb_gd_pass = _jit(_gd_pass)


def _loop_jit(fn):
    """``fn`` compiled in parallel over blocks, cached on disk (next to this file, in ``NUMBA_CACHE_DIR`` or in
    numba's user-wide directory); where no cache location is writable it still compiles, once per process."""
    try:
        return _jit(parallel=True, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return _jit(parallel=True)(fn)


bngd_loop = _loop_jit(_bngd_loop)
gd_loop = _loop_jit(_gd_loop)
