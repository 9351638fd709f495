"""Exact batched GD and BNGD on a least-squares problem (SPEC section 1, population updates).

A batch of B runs advances together in H's eigenbasis, where ``H = diag(lambda)`` and a step costs O(d) per
run. The learning rates, BN-scale rates, initial conditions and seeds broadcast to the batch. A run whose next
state would leave the safe range (``kernels.blowup_bounds`` of the dtype) is frozen at its last state and flagged
with the step it did not take; the others go on untouched.

Engines, chosen by ``compile``: the fused numba loops of ``bnlab.ols.kernels`` on CPU (``"auto"`` and ``True``);
on other devices torch, step by step (``False``, and ``"auto"`` for small jobs) or ``torch.compile``-fused
segments (``True``, and ``"auto"`` for large jobs). ``compile=False`` is the eager torch reference on every
device. All engines apply the same rules (``bnlab.ols.kernels``) with the same per-step freezing.

GD:    ``w_{k+1} = w_k + eps (g - H w_k)``; tracked as ``v = w - u``, ``v_{k+1} = (1 - eps lambda) v_k``.
BNGD:  ``a_{k+1} = a_k + eps_a (w_k^T g / ||w_k||_H - a_k)``
       ``w_{k+1} = w_k + (eps a_k / ||w_k||_H) (g - (w_k^T g / ||w_k||_H^2) H w_k)``,
       both from ``(a_k, w_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from bnlab.device import resolve_device
from bnlab.errors import BnlabError
from bnlab.ols import kernels, torch_engine
from bnlab.ols.kernels import blowup_bounds
from bnlab.ols.problem import Normalisation, Problem, initial_weights


@dataclass
class Trajectory:
    """Per-run, per-recorded-step results of a batched GD or BNGD run (NumPy arrays, batch axis last).

    ``excess_loss[t, i]`` is ``J - J*`` of run ``i`` at step ``steps[t]``. For BNGD ``a``, ``w_norm``
    (Euclidean), ``w_norm_H`` and ``eff_step = eps a^2 / ||w||_H^2`` are recorded too. ``w_final`` is in
    the original coordinates. ``diverged_at[i]`` is the step run ``i`` did not take (it stays at step
    ``diverged_at[i] - 1``; 0 if its initial state was already out of range), or -1.
    """

    method: str
    steps: np.ndarray
    eps: np.ndarray
    excess_loss: np.ndarray
    w_final: np.ndarray
    diverged_at: np.ndarray
    eps_a: np.ndarray | None = None
    a: np.ndarray | None = None
    w_norm: np.ndarray | None = None
    w_norm_H: np.ndarray | None = None
    eff_step: np.ndarray | None = None
    a_final: np.ndarray | None = None

    @property
    def batch_size(self) -> int:
        return int(self.eps.shape[0])

    @property
    def diverged(self) -> np.ndarray:
        return self.diverged_at >= 0

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (run, recorded step)."""
        T, B = self.excess_loss.shape
        cols = {
            "run": np.tile(np.arange(B), T),
            "step": np.repeat(self.steps, B),
            "eps": np.tile(self.eps, T),
            "excess_loss": self.excess_loss.ravel(),
        }
        if self.eps_a is not None:
            cols["eps_a"] = np.tile(self.eps_a, T)
        for name in ("a", "w_norm", "w_norm_H", "eff_step"):
            values = getattr(self, name)
            if values is not None:
                cols[name] = values.ravel()
        cols["diverged"] = np.tile(self.diverged, T) & (cols["step"] >= np.tile(self.diverged_at, T))
        return pd.DataFrame(cols)


# -- argument handling -----------------------------------------------------------------------------------
def _rates(name: str, value, allow_zero: bool = False) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise BnlabError(f"{name} must be a scalar or a 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if bad.any():
        raise BnlabError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {arr[bad][0]!r}")
    return arr


def _batch(*lengths: int) -> int:
    sizes = {n for n in lengths if n != 1}
    if len(sizes) > 1:
        raise BnlabError(f"batch arguments have incompatible lengths {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _initial_w(problem: Problem, w0, seed, w0_norm: Normalisation) -> np.ndarray:
    if w0 is None:
        return initial_weights(problem.d, seed, w0_norm)
    w0 = np.asarray(w0, dtype=np.float64)
    if w0.ndim == 1:
        w0 = w0[None, :]
    if w0.ndim != 2 or w0.shape[1] != problem.d:
        raise BnlabError(f"w0 must have shape ({problem.d},) or (B, {problem.d}), got {w0.shape}")
    if not np.all(np.isfinite(w0)):
        raise BnlabError("w0 contains NaN or infinite values")
    return w0


def _calling_thread_blas():
    """Run the BLAS calls in this block on the calling thread only.

    Why: after a multi-threaded call OpenBLAS's idle workers keep spinning for about 0.1 s; on a 2-core machine
    they slowed a numba loop started within that time by up to 1.7x (measured with one numba thread: BNGD,
    1024 runs x d = 100, 0.67 -> 0.38 ns per run-dim-step). The basis changes are O(B d^2), small beside it.
    """
    return threadpool_limits(limits=1, user_api="blas")


def _record_steps(steps: int, record_every: int) -> np.ndarray:
    if int(steps) != steps or steps < 0:
        raise BnlabError(f"steps must be a non-negative integer, got {steps}")
    if int(record_every) != record_every or record_every < 1:
        raise BnlabError(f"record_every must be a positive integer, got {record_every}")
    recorded = np.arange(0, steps + 1, record_every)
    return recorded if recorded[-1] == steps else np.append(recorded, steps)


_DTYPES = {torch.float64: np.float64, torch.float32: np.float32}
# The fused CPU loops' layout (``bnlab.ols.kernels``): runs in blocks across the vector lanes below this d, one run
# (BNGD: four) per vectorised pass from it on. Measured on an AVX-512 Xeon (ns per run-dim-step, one thread, BNGD
# end-only, blocks -> runs): d = 10: 0.72 -> 1.95; d = 30: 0.53 -> 0.57; d = 64: 0.46 -> 0.40; d = 100: 0.44
# -> 0.34; d = 300: 0.52 -> 0.31. GD: runs faster from d = 30 (0.59 -> 0.39) on.
RUNS_LAYOUT_MIN_D = 32


def _layout(d: int) -> str:
    return "blocks" if d < RUNS_LAYOUT_MIN_D else "runs"


# "auto" on a GPU compiles when a run does at least this many run x dimension x steps (eager then takes seconds).
_AUTO_COMPILE_WORK = 1e8


def _engine(compile_, device: torch.device, work: float) -> str:
    """Which engine runs the steps: ``"numba"``, ``"torch"`` (eager) or ``"torch-compiled"``."""
    if compile_ not in (True, False, "auto"):
        raise BnlabError(f"compile must be True, False or 'auto', got {compile_!r}")
    if compile_ is False:
        return "torch"
    if device.type == "cpu":
        return "numba"
    return "torch-compiled" if compile_ is True or work >= _AUTO_COMPILE_WORK else "torch"


def _setup(problem: Problem, eps, steps, record_every, device, dtype, compile_, *batch_lengths):
    """Validated ``(eps (B,), recorded steps, B, device, numpy dtype, engine)`` shared by ``gd`` and ``bngd``."""
    eps_np = _rates("eps", eps)
    if dtype not in _DTYPES:
        raise BnlabError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    B = _batch(len(eps_np), *batch_lengths)
    recorded = _record_steps(steps, record_every)
    dev = resolve_device(device)
    return eps_np, recorded, B, dev, _engine(compile_, dev, B * problem.d * steps)


def _lanes(arr: np.ndarray, B: int, dtype, lanes: int) -> np.ndarray:
    """``arr`` broadcast to ``B`` runs and padded (repeating the last run) to a whole number of kernel blocks."""
    full = np.broadcast_to(arr, (B, *arr.shape[1:]))
    pad = -B % lanes
    return np.ascontiguousarray(np.concatenate([full, np.repeat(full[-1:], pad, axis=0)]), dtype=dtype)


# -- GD --------------------------------------------------------------------------------------------------
def gd(
    problem: Problem,
    eps,
    steps: int,
    w0=None,
    *,
    seed=0,
    w0_norm: Normalisation = "gaussian",
    record_every: int = 1,
    device=None,
    dtype: torch.dtype = torch.float64,
    compile: bool | str = "auto",
) -> Trajectory:
    """Batched gradient descent on ``J0``; ``eps`` (B,) and ``w0`` (d,)/(B, d) (or ``seed``) broadcast.

    The excess loss is ``J0(w) - J* = (w - u)^T H (w - u) / 2``, computed from ``v = w - u`` directly so
    that it keeps full relative precision near the optimum. A run is frozen before the step that would take
    its gap past ``min(growth * gap_0, cap)`` (``kernels.blowup_bounds`` of ``dtype``); a run whose gap falls
    below ``kernels.gd_floor`` is set to the optimum exactly. ``compile``: see the module docstring.
    """
    w0_np = _initial_w(problem, w0, seed, w0_norm)
    eps_np, recorded, B, dev, engine = _setup(problem, eps, steps, record_every, device, dtype, compile, len(w0_np))
    _, _, growth, cap = blowup_bounds(float(torch.finfo(dtype).max))
    lam = problem.eigvals
    with _calling_thread_blas():
        v0 = w0_np @ problem.eigvecs - problem.u_eig
        gap0 = 0.5 * (v0 * v0) @ lam
    tiny = float(np.finfo(_DTYPES[dtype]).tiny)
    bound, floor = np.minimum(growth * np.maximum(gap0, tiny), cap), kernels.gd_floor(tiny)
    if engine == "numba":
        excess, v, diverged_at = _gd_numba(
            lam, v0, eps_np, recorded, bound, floor, B, _DTYPES[dtype], _layout(problem.d)
        )
    else:
        excess, v, diverged_at = torch_engine.gd_run(
            lam, v0, eps_np, recorded, bound, floor, B, dev, dtype, engine == "torch-compiled"
        )
    with _calling_thread_blas():
        w_final = (v + problem.u_eig) @ problem.eigvecs.T
    return Trajectory(
        method="gd",
        steps=recorded,
        eps=np.broadcast_to(eps_np, (B,)).copy(),
        excess_loss=excess,
        w_final=w_final,
        diverged_at=diverged_at,
    )


def _gd_numba(lam, v0, eps, recorded, bound, floor, B, dtype, layout):
    lanes = kernels.GD_LANES if layout == "blocks" else 1
    v0_l, eps_l, bound_l = (_lanes(x, B, dtype, lanes) for x in (v0, eps, bound))
    v, diverged_at = np.empty_like(v0_l), np.empty(len(eps_l), np.int64)
    args = (lam.astype(dtype), v0_l, eps_l, recorded.astype(np.int64), bound_l, floor)
    if layout == "blocks":
        out = np.empty((len(recorded), len(eps_l)), dtype)
        kernels.gd_loop(*args, lanes, out, v, diverged_at)
    else:
        out = np.empty((len(eps_l), len(recorded)), dtype)  # a run's records in order (see the BNGD loop)
        kernels.gd_runs_loop(*args, out, v, diverged_at)
        out = out.T
    return out[:, :B], v[:B], diverged_at[:B]


# -- BNGD ------------------------------------------------------------------------------------------------
_OBSERVED = ("excess_loss", "a", "w_norm", "w_norm_H", "eff_step")


def bngd(
    problem: Problem,
    eps,
    steps: int,
    eps_a=1.0,
    w0=None,
    a0=1.0,
    *,
    seed=0,
    w0_norm: Normalisation = "gaussian",
    record_every: int = 1,
    device=None,
    dtype: torch.dtype = torch.float64,
    compile: bool | str = "auto",
) -> Trajectory:
    """Batched BNGD on the BN loss ``J(a, w)``; ``eps``, ``eps_a``, ``a0`` (B,) and ``w0`` broadcast.

    Recorded per run: ``J - J*`` computed as ``((a - p)^2 + ||e||_H^2) / 2`` with ``p = w^T g / ||w||_H``
    (exact: ``u^T H u - p^2 = ||e||_H^2``, free of cancellation), ``a``, ``||w||``, ``||w||_H`` and the
    effective step size ``eps a^2 / ||w||_H^2``. A run is frozen before the step that would take ``|a|`` or
    ``||w||_H^2`` out of range (``kernels.blowup_bounds`` of ``dtype``).

    ``compile``: ``"auto"``/``True`` run the fused numba loop on CPU (compiled once, cached on disk);
    on a GPU ``True`` fuses steps with ``torch.compile`` and ``"auto"`` does so for large jobs only;
    ``False`` runs the eager torch reference, step by step.
    """
    eps_a_np = _rates("eps_a", eps_a)
    a0_np = np.atleast_1d(np.asarray(a0, dtype=np.float64))
    if a0_np.ndim != 1 or not np.all(np.isfinite(a0_np)):
        raise BnlabError("a0 must be a finite scalar or 1-D array")
    w0_np = _initial_w(problem, w0, seed, w0_norm)
    if np.any(np.linalg.norm(w0_np, axis=1) == 0):
        raise BnlabError("w0 must be non-zero for BNGD (BN divides by ||w||_H)")
    eps_np, recorded, B, dev, engine = _setup(
        problem, eps, steps, record_every, device, dtype, compile, len(eps_a_np), len(a0_np), len(w0_np)
    )
    a_bound, whw_bound, _, _ = blowup_bounds(float(torch.finfo(dtype).max))
    with _calling_thread_blas():
        w0_eig = w0_np @ problem.eigvecs
    args = (problem.eigvals, problem.g_eig, problem.u_eig, w0_eig, a0_np, eps_np, eps_a_np)
    if engine == "numba":
        observed, w, a, diverged_at = _bngd_numba(
            *args, recorded, a_bound, whw_bound, B, _DTYPES[dtype], _layout(problem.d)
        )
    else:
        observed, w, a, diverged_at = torch_engine.bngd_run(
            *args, recorded, a_bound, whw_bound, B, dev, dtype, engine == "torch-compiled"
        )
    with _calling_thread_blas():
        w_final = w @ problem.eigvecs.T
    return Trajectory(
        method="bngd",
        steps=recorded,
        eps=np.broadcast_to(eps_np, (B,)).copy(),
        eps_a=np.broadcast_to(eps_a_np, (B,)).copy(),
        w_final=w_final,
        a_final=a,
        diverged_at=diverged_at,
        **{name: observed[:, i] for i, name in enumerate(_OBSERVED)},
    )


def _bngd_numba(lam, g, u, w0, a0, eps, eps_a, recorded, a_bound, whw_bound, B, dtype, layout):
    lanes = kernels.BNGD_LANES if layout == "blocks" else kernels.RUNS_PER_PASS
    w0_l, a0_l, eps_l, eps_a_l = (_lanes(x, B, dtype, lanes) for x in (w0, a0, eps, eps_a))
    n = len(eps_l)
    w, a, diverged_at = np.empty_like(w0_l), np.empty(n, dtype), np.empty(n, np.int64)
    args = (*(x.astype(dtype) for x in (lam, g, u)), w0_l, a0_l, eps_l, eps_a_l, recorded.astype(np.int64))
    if layout == "blocks":
        out = np.empty((len(recorded), len(_OBSERVED), n), dtype)
        kernels.bngd_loop(*args, a_bound, whw_bound, lanes, out, w, a, diverged_at)
    else:
        out = np.empty((n, len(_OBSERVED), len(recorded)), dtype)
        kernels.bngd_quads_loop(*args, a_bound, whw_bound, out, w, a, diverged_at)
        out = out.transpose(2, 1, 0)  # a view, (T, 5, B) like the blocks' output
    return out[:, :, :B], w[:B], a[:B], diverged_at[:B]
