"""Exact batched GD and BNGD on a least-squares problem (SPEC section 1, population updates).

A batch of B runs advances together as ``(B, d)`` tensors in H's eigenbasis, where ``H = diag(lambda)`` and a
step costs O(d) per run. The learning rates, BN-scale rates, initial conditions and seeds broadcast to the
batch. A run that blows up is frozen at its last finite state and flagged; the others go on untouched.

GD:    ``w_{k+1} = w_k + eps (g - H w_k)``; tracked as ``v = w - u``, ``v_{k+1} = (1 - eps lambda) v_k``.
BNGD:  ``a_{k+1} = a_k + eps_a (w_k^T g / ||w_k||_H - a_k)``
       ``w_{k+1} = w_k + (eps a_k / ||w_k||_H) (g - (w_k^T g / ||w_k||_H^2) H w_k)``,
       both from ``(a_k, w_k)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from bnlab.device import resolve_device
from bnlab.errors import BnlabError
from bnlab.ols.problem import Normalisation, Problem, initial_weights

# A run is declared diverged when its loss gap exceeds this multiple of its initial gap (GD) or when
# |a| or ||w||_H^2 pass these bounds (BNGD): far below overflow, so a frozen run's state stays finite.
GD_BLOWUP = 1e100
BNGD_A_BOUND = 1e100
BNGD_WHW_BOUND = 1e250


@dataclass
class Trajectory:
    """Per-run, per-recorded-step results of a batched GD or BNGD run (NumPy arrays, batch axis last).

    ``excess_loss[t, i]`` is ``J - J*`` of run ``i`` at step ``steps[t]``. For BNGD ``a``, ``w_norm``
    (Euclidean), ``w_norm_H`` and ``eff_step = eps a^2 / ||w||_H^2`` are recorded too. ``w_final`` is in
    the original coordinates. ``diverged_at[i]`` is the step at which run ``i`` was frozen, or -1.
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
    extra: dict = field(default_factory=dict)

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


def _record_steps(steps: int, record_every: int) -> np.ndarray:
    if int(steps) != steps or steps < 0:
        raise BnlabError(f"steps must be a non-negative integer, got {steps}")
    if int(record_every) != record_every or record_every < 1:
        raise BnlabError(f"record_every must be a positive integer, got {record_every}")
    recorded = np.arange(0, steps + 1, record_every)
    return recorded if recorded[-1] == steps else np.append(recorded, steps)


def _broadcast(arr: np.ndarray, B: int, tensor_kw) -> torch.Tensor:
    return torch.as_tensor(np.broadcast_to(arr, (B, *arr.shape[1:])).copy(), **tensor_kw)


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
) -> Trajectory:
    """Batched gradient descent on ``J0``; ``eps`` (B,) and ``w0`` (d,)/(B, d) (or ``seed``) broadcast.

    The excess loss is ``J0(w) - J* = (w - u)^T H (w - u) / 2``, computed from ``v = w - u`` directly so
    that it keeps full relative precision near the optimum.
    """
    eps_np = _rates("eps", eps)
    w0_np = _initial_w(problem, w0, seed, w0_norm)
    B = _batch(len(eps_np), len(w0_np))
    recorded = _record_steps(steps, record_every)
    kw = {"dtype": dtype, "device": resolve_device(device)}
    lam = torch.as_tensor(problem.eigvals, **kw)
    v = _broadcast(w0_np @ problem.eigvecs - problem.u_eig, B, kw)
    eps_t = _broadcast(eps_np, B, kw)
    factor = 1 - eps_t[:, None] * lam  # per-run contraction of each eigen-coordinate
    # One step multiplies the gap by at most growth^2: check often enough that nothing overflows between checks.
    growth = float(factor.abs().max())
    check_every = max(1, int(120 / max(math.log10(max(growth, 1.0 + 1e-12)), 1e-12)))
    gap0 = 0.5 * (v * v) @ lam
    bound = GD_BLOWUP * torch.clamp(gap0, min=torch.finfo(dtype).tiny)
    diverged_at = torch.full((B,), -1, dtype=torch.long, device=kw["device"])
    excess = torch.empty((len(recorded), B), **kw)
    excess[0] = gap0
    t = 1
    for k in range(1, steps + 1):
        v.mul_(factor)
        if k % check_every == 0 or k == recorded[t]:
            gap = 0.5 * (v * v) @ lam
            blown = (~torch.isfinite(gap) | (gap > bound)) & (diverged_at < 0)
            if bool(blown.any()):
                # Undo this segment's growth for the frozen runs is impossible exactly; freeze them where
                # they are (still finite: the check interval keeps them far from overflow).
                diverged_at[blown] = k
                factor[blown] = 1.0
            if k == recorded[t]:
                excess[t] = gap
                t += 1
    w_final = (v + torch.as_tensor(problem.u_eig, **kw)).cpu().numpy() @ problem.eigvecs.T
    return Trajectory(
        method="gd",
        steps=recorded,
        eps=np.broadcast_to(eps_np, (B,)).copy(),
        excess_loss=excess.cpu().numpy(),
        w_final=w_final,
        diverged_at=diverged_at.cpu().numpy(),
    )


# -- BNGD ------------------------------------------------------------------------------------------------
def bngd_moments(w, lam, g):
    """``(w^T g, H w, ||w||_H^2)`` for a batch of eigenbasis weights ``w`` (B, d), where ``H w = lambda * w``."""
    hw = w * lam
    return w @ g, hw, torch.linalg.vecdot(w, hw)


def bngd_update(w, a, wg, hw, whw, eps, eps_a, g, alive):
    """One BNGD step from ``(a_k, w_k)`` and their moments; frozen runs (``alive`` False) do not move.

    ``w + (eps a / ||w||_H) g - (eps a w^T g / ||w||_H^3) H w``, as one rank-one update and one scaled add;
    ``torch.where`` (not a product with a mask) keeps a frozen run's non-finite values out.
    """
    norm_h = torch.sqrt(whw)
    scale = eps * a / norm_h
    along_g = torch.where(alive, scale, 0.0)
    along_hw = torch.where(alive, scale * wg / whw, 0.0)
    w_next = torch.addr(w, along_g, g).addcmul_(along_hw[:, None], hw, value=-1.0)
    a_next = a + torch.where(alive, eps_a * (wg / norm_h - a), 0.0)
    return w_next, a_next


def _diverging(w_moment, a, alive):
    """Runs still alive whose ``||w||_H^2`` or ``a`` left the safe range (or are NaN)."""
    return alive & (~torch.isfinite(w_moment) | (w_moment > BNGD_WHW_BOUND) | ~(a.abs() <= BNGD_A_BOUND))


def _bngd_advance(w, a, alive, diverged_at, k, eps, eps_a, lam, g, n: int):
    """``n`` BNGD steps from step ``k`` (a 0-d tensor, so a compiled version serves every k).

    Divergence is checked once, before the first step: the bounds sit so far below overflow that ``n <= 8``
    further steps keep a frozen run finite, and a per-step check would double the eager cost.
    """
    wg, hw, whw = bngd_moments(w, lam, g)
    bad = _diverging(whw, a, alive)
    diverged_at = torch.where(bad, k, diverged_at)
    alive = alive & ~bad
    for i in range(n):
        if i:
            wg, hw, whw = bngd_moments(w, lam, g)
        w, a = bngd_update(w, a, wg, hw, whw, eps, eps_a, g, alive)
    return w, a, alive, diverged_at


def _bngd_observe(w, a, eps, lam, g, u):
    """Stacked ``(J - J*, a, ||w||, ||w||_H, eps_hat)`` of a batch, shape (5, B)."""
    wg, _, whw = bngd_moments(w, lam, g)
    e = u - (wg / whw)[:, None] * w
    p = wg / torch.sqrt(whw)
    excess = 0.5 * ((a - p) ** 2 + (e * e) @ lam)
    return torch.stack([excess, a, torch.linalg.vector_norm(w, dim=1), torch.sqrt(whw), eps * a * a / whw])


_OBSERVED = ("excess_loss", "a", "w_norm", "w_norm_H", "eff_step")
# Steps fused into one compiled call: long enough to amortise the call, short enough to compile quickly.
_FUSED_STEPS = 8
# "auto" compiles when a run does at least this many run x dimension x steps (eager then takes seconds).
_AUTO_COMPILE_WORK = 1e8


def _kernels(compile_: bool):
    if not compile_:
        return _bngd_advance, _bngd_observe
    return _with_eager_fallback(_bngd_advance), _with_eager_fallback(_bngd_observe)


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
    effective step size ``eps a^2 / ||w||_H^2``.

    ``compile``: fuse the steps with ``torch.compile`` (C++/OpenMP on CPU, Triton on GPU; the first call
    compiles for a few seconds); ``"auto"`` does so for large jobs only.
    """
    eps_np = _rates("eps", eps)
    eps_a_np = _rates("eps_a", eps_a)
    a0_np = np.atleast_1d(np.asarray(a0, dtype=np.float64))
    if a0_np.ndim != 1 or not np.all(np.isfinite(a0_np)):
        raise BnlabError("a0 must be a finite scalar or 1-D array")
    w0_np = _initial_w(problem, w0, seed, w0_norm)
    if np.any(np.linalg.norm(w0_np, axis=1) == 0):
        raise BnlabError("w0 must be non-zero for BNGD (BN divides by ||w||_H)")
    if compile not in (True, False, "auto"):
        raise BnlabError(f"compile must be True, False or 'auto', got {compile!r}")
    B = _batch(len(eps_np), len(eps_a_np), len(a0_np), len(w0_np))
    recorded = _record_steps(steps, record_every)
    dev = resolve_device(device)
    kw = {"dtype": dtype, "device": dev}
    lam = torch.as_tensor(problem.eigvals, **kw)
    g = torch.as_tensor(problem.g_eig, **kw)
    u = torch.as_tensor(problem.u_eig, **kw)
    w = _broadcast(w0_np @ problem.eigvecs, B, kw)
    a = _broadcast(a0_np, B, kw)
    eps_t, eps_a_t = _broadcast(eps_np, B, kw), _broadcast(eps_a_np, B, kw)
    alive = torch.ones(B, dtype=torch.bool, device=dev)
    diverged_at = torch.full((B,), -1, dtype=torch.long, device=dev)
    if compile == "auto":
        compile = B * problem.d * steps >= _AUTO_COMPILE_WORK
    advance, observe = _kernels(bool(compile))
    observed = torch.empty((len(recorded), len(_OBSERVED), B), **kw)
    observed[0] = observe(w, a, eps_t, lam, g, u)
    for t in range(1, len(recorded)):
        k, todo = int(recorded[t - 1]), int(recorded[t] - recorded[t - 1])
        while todo > 0:
            n = _FUSED_STEPS if todo >= _FUSED_STEPS else 1
            k_t = torch.tensor(k, device=dev)
            w, a, alive, diverged_at = advance(w, a, alive, diverged_at, k_t, eps_t, eps_a_t, lam, g, n)
            k, todo = k + n, todo - n
        observed[t] = observe(w, a, eps_t, lam, g, u)
    # A run frozen at the final state is still flagged.
    bad = _diverging(bngd_moments(w, lam, g)[2], a, alive)
    diverged_at = torch.where(bad, steps, diverged_at)
    observed = observed.cpu().numpy()
    return Trajectory(
        method="bngd",
        steps=recorded,
        eps=np.broadcast_to(eps_np, (B,)).copy(),
        eps_a=np.broadcast_to(eps_a_np, (B,)).copy(),
        w_final=w.cpu().numpy() @ problem.eigvecs.T,
        a_final=a.cpu().numpy(),
        diverged_at=diverged_at.cpu().numpy(),
        **{name: observed[:, i] for i, name in enumerate(_OBSERVED)},
    )
