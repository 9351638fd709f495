"""The GD and BNGD update rules (SPEC section 1, in H's eigenbasis) and their fused CPU loops (numba).

The rules are plain arithmetic on per-run values, so the same functions serve the eager/compiled torch path
(on (B,) tensors) and the numba loops (on scalars): one source of truth for each formula. They live in this
file, beside the loops that inline them, because numba's disk cache is invalidated by this file's timestamp
only; a rule kept elsewhere could go stale in the cache.

Two fused loop layouts, chosen by d (``dynamics.RUNS_LAYOUT_MIN_D``):
- blocks (small d): runs are cut into blocks of ``lanes``; a block's state is a ``(d, lanes)`` array, so the
  inner loop runs across independent runs and vectorises without reordering any floating-point sum. Each step is
  one pass that writes ``w_{k+1}`` into a second buffer and accumulates its moments ``w^T g`` and ``||w||_H^2``,
  which the next step and the blow-up check both use. A run whose next state would leave the safe range is frozen
  at its last state: its column is restored from the other buffer and its coefficients become zero, so later
  passes copy it unchanged. A recorded step uses a variant of the pass that also sums ``||e||_H^2`` and ``||w||^2``
  of ``w_k`` and writes the recorded quantities into the caller's preallocated buffer.
- runs (d >= 32): each run's pass over i vectorises its own sums (BNGD four runs per pass); see the section
  "the per-run loops" below. Same rules, same freezing; a run frozen (or, for GD, at the optimum) for good stops
  costing anything.
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
    """``(J - J*, a, ||w||, ||w||_H, eps_hat)`` of a group of runs into ``out_t`` (5, runs): both layouts' records."""
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


# -- the per-run loops (d >= 32) --------------------------------------------------------------------------
# From d ~ 32 up a run's state is long enough to vectorise its own sums: one run per vectorised pass (BNGD: four,
# sharing the loads of lambda, g, u and hiding one another's square root and divisions), its sums in registers,
# one store per element; the block layout instead keeps its per-run sums in memory (three stores per element)
# and its (d, lanes) buffers leave L1 as d grows. These loops let LLVM reassociate the sums over i (which is what
# vectorises them) and contract multiply-adds: results differ from the in-order loops by round-off (1e-16
# relative per step) and depend on the vector width, as any vectorised sum does (torch's included). A step's
# state rows are picked by index: a view or a rebound array per step would cost numba a reference count each,
# more than the pass itself at d = 100.
RUNS_PER_PASS = 4  # BNGD; the quad pass below is written out for four runs


def _bngd_quad_pass(lam, g, u, W, src, dst, c, r):
    """``W[dst[q]] = w + c[q] H e`` (``w = W[src[q]]``, ``e = u - r[q] w``) for four runs in one pass over i,
    with each run's ``W[dst[q]]^T g`` and ``||W[dst[q]]||_H^2``."""
    s0, s1, s2, s3, n0, n1, n2, n3 = src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3]
    c0, c1, c2, c3, r0, r1, r2, r3 = c[0], c[1], c[2], c[3], r[0], r[1], r[2], r[3]
    wg0 = whw0 = wg1 = whw1 = wg2 = whw2 = wg3 = whw3 = 0.0
    for i in range(lam.shape[0]):
        lam_i, g_i, u_i = lam[i], g[i], u[i]
        y0 = _fast_bngd_w_next(W[s0, i], c0, lam_i * _fast_bngd_error(u_i, r0, W[s0, i]))
        y1 = _fast_bngd_w_next(W[s1, i], c1, lam_i * _fast_bngd_error(u_i, r1, W[s1, i]))
        y2 = _fast_bngd_w_next(W[s2, i], c2, lam_i * _fast_bngd_error(u_i, r2, W[s2, i]))
        y3 = _fast_bngd_w_next(W[s3, i], c3, lam_i * _fast_bngd_error(u_i, r3, W[s3, i]))
        W[n0, i], W[n1, i], W[n2, i], W[n3, i] = y0, y1, y2, y3
        wg0 += y0 * g_i
        whw0 += y0 * (y0 * lam_i)
        wg1 += y1 * g_i
        whw1 += y1 * (y1 * lam_i)
        wg2 += y2 * g_i
        whw2 += y2 * (y2 * lam_i)
        wg3 += y3 * g_i
        whw3 += y3 * (y3 * lam_i)
    return (wg0, wg1, wg2, wg3), (whw0, whw1, whw2, whw3)


def _bngd_record_sums(lam, u, w, r):
    """``(||e||_H^2, ||w||^2)`` of one run (``e = u - r w``). A pass of its own, so that a step is the same pass
    whether it is recorded or not: every recording mode then follows the same trajectory to the last bit (one
    loop computing both would be vectorised, hence summed, in another order)."""
    e_h2, ww = 0.0, 0.0
    for i in range(lam.shape[0]):
        e = _fast_bngd_error(u[i], r, w[i])
        e_h2 += e * (lam[i] * e)
        ww += w[i] * w[i]
    return e_h2, ww


def _bngd_quads_loop(lam, g, u, w0, a0, eps, eps_a, recorded, a_bound, whw_bound, out, w_final, a_final, diverged_at):
    """BNGD for ``B`` runs (a multiple of four), four per pass; same results as ``_bngd_loop`` but written to
    ``out[run, :, t]`` (a run writes its own records in order; across runs each record would touch its own cache
    line). A group whose runs are all frozen stops stepping: its last records fill the remaining steps."""
    d, B, dtype = lam.shape[0], w0.shape[0], w0.dtype
    steps = recorded[-1]
    for group in numba.prange(B // 4):
        runs = slice(4 * group, 4 * group + 4)
        W = np.empty((8, d), dtype)  # run q's state in row src[q], its next one written into row dst[q]
        src, dst = np.arange(0, 8, 2), np.arange(1, 8, 2)
        W[src] = w0[runs]
        a, eps_g, eps_a_g, div = a0[runs].copy(), eps[runs], eps_a[runs], diverged_at[runs]
        c, r, a_next = np.zeros(4, dtype), np.zeros(4, dtype), np.empty(4, dtype)
        e_h2, ww = np.empty(4, dtype), np.empty(4, dtype)
        wg_0, whw_0 = _fast_bngd_quad_pass(lam, g, u, W, src, dst, c, r)  # c = 0: the moments of w_0
        wg, whw, alive = np.empty(4, dtype), np.empty(4, dtype), np.empty(4, np.bool_)
        for q in range(4):
            wg[q], whw[q] = wg_0[q], whw_0[q]
            alive[q] = _fast_bngd_within_bounds(a[q], whw[q], a_bound, whw_bound)
            div[q] = -1 if alive[q] else 0
        t = 0
        for k in range(steps + 1):
            for q in range(4):
                c[q], r[q], a_next[q] = _fast_bngd_coefficients(
                    a[q], wg[q], whw[q], math.sqrt(whw[q]), eps_g[q], eps_a_g[q]
                )
                c[q] = c[q] if alive[q] else 0.0  # a frozen run's pass copies it
            if k == recorded[t]:
                for q in range(4):
                    e_h2[q], ww[q] = _fast_bngd_record_sums(lam, u, W[src[q]], r[q])
                _nb_bngd_record(a, wg, whw, e_h2, ww, eps_g, out[runs, :, t].T)
                t += 1
                if not alive.any():  # all four frozen: nothing moves again
                    for run in range(4 * group, 4 * group + 4):
                        for m in range(5):
                            out[run, m, t:] = out[run, m, t - 1]
                    break
            if k == steps:
                break
            wg_next, whw_next = _fast_bngd_quad_pass(lam, g, u, W, src, dst, c, r)
            for q in range(4):
                if not alive[q]:
                    continue
                if _fast_bngd_within_bounds(a_next[q], whw_next[q], a_bound, whw_bound):
                    a[q], wg[q], whw[q] = a_next[q], wg_next[q], whw_next[q]
                    src[q], dst[q] = dst[q], src[q]
                else:  # freeze at step k: row src[q] still holds w_k
                    alive[q] = False
                    div[q] = k + 1
        a_final[runs] = a
        w_final[runs] = W[src]


def _gd_run_pass(lam, V, src, dst, eps, flush):
    """``V[dst] = (1 - eps lambda) V[src]`` for one run, with its gap ``V[dst]^T H V[dst] / 2``; a coordinate
    below ``flush`` is set to zero (``gd_flush``)."""
    gap = 0.0
    for i in range(lam.shape[0]):
        x = _fast_gd_flush(V[src, i] * _fast_gd_factor(eps, lam[i]), flush)
        V[dst, i] = x
        gap += (x * x) * lam[i]
    return 0.5 * gap


def _gd_runs_loop(lam, v0, eps, recorded, bound, floor, out, v_final, diverged_at):
    """GD for ``B`` runs, one per pass; same outputs as ``_gd_loop`` but ``out[run, t]``. A run frozen or set to
    the optimum stops stepping: its gap fills the remaining recorded steps."""
    d, B = lam.shape[0], v0.shape[0]
    steps = recorded[-1]
    for run in numba.prange(B):
        V = np.empty((2, d), v0.dtype)  # the state in row s, the next one written into row s ^ 1
        V[0] = v0[run]
        s, div = 0, -1
        gap = _fast_gd_run_pass(lam, V, 0, 1, 0.0, 0.0)  # a factor of one, nothing flushed: the initial gap
        t = 0
        for k in range(steps + 1):
            if k == recorded[t]:
                out[run, t] = gap
                t += 1
            if k == steps:
                break
            if div >= 0 or gap == 0.0:  # frozen, or exactly at the optimum: nothing moves again
                out[run, t:] = gap
                break
            gap_next = _fast_gd_run_pass(lam, V, s, s ^ 1, eps[run], floor)
            if gap_next < floor:  # at the optimum: zero, not a walk through subnormal numbers
                V[s ^ 1] = 0.0
                gap, s = 0.0, s ^ 1
            elif gap_next <= bound[run]:
                gap, s = gap_next, s ^ 1
            else:
                div = k + 1
        v_final[run] = V[s]
        diverged_at[run] = div


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
# The per-run loops: the same rules, free to reassociate sums and contract multiply-adds. No other fast-math
# flag: the blow-up checks rely on NaN and infinity behaving as IEEE says.
_fast = functools.partial(numba.njit, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
_fast_bngd_coefficients = _fast(bngd_coefficients)
_fast_bngd_w_next = _fast(bngd_w_next)
_fast_bngd_error = _fast(bngd_error)
_fast_bngd_within_bounds = _fast(bngd_within_bounds)
_fast_gd_factor = _fast(gd_factor)
_fast_gd_flush = _fast(gd_flush)
_fast_bngd_quad_pass = _fast(_bngd_quad_pass)
_fast_bngd_record_sums = _fast(_bngd_record_sums)
_fast_gd_run_pass = _fast(_gd_run_pass)


def _loop_jit(fn, jit=_jit):
    """``fn`` compiled in parallel over blocks, cached on disk (next to this file, in ``NUMBA_CACHE_DIR`` or in
    numba's user-wide directory); where no cache location is writable it still compiles, once per process."""
    try:
        return jit(parallel=True, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return jit(parallel=True)(fn)


bngd_loop = _loop_jit(_bngd_loop)
gd_loop = _loop_jit(_gd_loop)
bngd_quads_loop = _loop_jit(_bngd_quads_loop, _fast)
gd_runs_loop = _loop_jit(_gd_runs_loop, _fast)
