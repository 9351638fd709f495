"""Closed-form predictions of the theory, and estimators that measure the same quantities on trajectories.

GD (SPEC F1): converges iff ``0 < eps < 2 / lambda_max``; the error contracts per step by
``rho(eps) = max_i |1 - eps lambda_i|``; best ``eps = 2 / (lambda_max + lambda_min)`` with rate
``(kappa - 1) / (kappa + 1)``. The loss gap contracts by ``rho^2``.

BNGD (SPEC F5, F6): the effective Hessian ``H* = H - H u u^T H / (u^T H u)`` has ``u`` in its kernel and its
d - 1 non-zero eigenvalues interlace with H's, so ``kappa* = lambda*_max / lambda*_min <= kappa``. With the
effective step size ``eps_hat = eps a^2 / ||w||_H^2`` the direction error contracts per step by
``rho*(eps_hat) = max(|1 - eps_hat lambda*_max|, |1 - eps_hat lambda*_min|)`` and the loss gap by ``rho*^2``,
provided ``eps_hat < 2 / lambda*_max``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from bnlab.ols.problem import Problem

# Up to this dimension H*'s spectrum comes from a dense eigensolver; beyond it, from the secular equation.
_DENSE_MAX_D = 2048


# -- GD --------------------------------------------------------------------------------------------------
def gd_threshold(problem: Problem) -> float:
    """GD's stability edge ``2 / lambda_max``."""
    return 2.0 / problem.lambda_max


def gd_optimal_eps(problem: Problem) -> float:
    """``2 / (lambda_max + lambda_min)``, the eps minimising ``gd_rate``."""
    return 2.0 / (problem.lambda_max + problem.lambda_min)


def gd_optimal_rate(problem: Problem) -> float:
    """``(kappa - 1) / (kappa + 1)``."""
    return (problem.kappa - 1) / (problem.kappa + 1)


def gd_rate(problem: Problem, eps) -> np.ndarray:
    """Per-step contraction of ``w - u``: ``max(|1 - eps lambda_max|, |1 - eps lambda_min|)``."""
    eps = np.asarray(eps, dtype=np.float64)
    return np.maximum(np.abs(1 - eps * problem.lambda_max), np.abs(1 - eps * problem.lambda_min))


# -- BNGD ------------------------------------------------------------------------------------------------
def effective_hessian(problem: Problem) -> np.ndarray:
    """``H* = H - H u u^T H / (u^T H u)`` in the original coordinates (dense, d x d)."""
    hu = problem.H @ problem.u
    return problem.H - np.outer(hu, hu) / problem.u_norm_H2


def effective_eigvals(problem: Problem) -> np.ndarray:
    """The d - 1 non-zero eigenvalues of ``H*``, descending.

    In H's eigenbasis ``H* = diag(lambda) - z z^T / rho`` with ``z = lambda * u`` and ``rho = u^T H u``; a
    rank-one downdate whose eigenvalues ``mu_j`` lie in ``[lambda_{j+1}, lambda_j]`` and solve the secular
    equation ``1 = sum_i z_i^2 / (rho (lambda_i - mu))``; the remaining one is 0 (``H* u = 0``).
    """
    lam, z, rho = problem.eigvals, problem.eigvals * problem.u_eig, problem.u_norm_H2
    if problem.d == 1:
        return np.empty(0)
    if problem.d <= _DENSE_MAX_D:
        mu = np.linalg.eigvalsh(np.diag(lam) - np.outer(z, z) / rho)[::-1]
        return mu[:-1]
    return np.array([_secular_root(lam, z, rho, j) for j in range(problem.d - 1)])


def _secular_root(lam: np.ndarray, z: np.ndarray, rho: float, j: int) -> float:
    """The eigenvalue of ``diag(lam) - z z^T / rho`` in ``[lam[j+1], lam[j]]``.

    ``f(mu) = 1 - sum_i z_i^2 / (rho (lam_i - mu))`` falls from +inf to -inf across the interval. The root is
    found as an offset ``t`` from the nearer pole, with ``lam_i - mu = (lam_i - pole) - t``, so that a root
    close to a pole keeps its relative precision (the shift LAPACK's dlaed4 uses).
    """
    lo, hi = lam[j + 1], lam[j]
    if hi - lo <= 1e-15 * hi or z[j] == 0 or z[j + 1] == 0:
        return float(lo if z[j + 1] == 0 else hi)  # a repeated eigenvalue or an eigenvector orthogonal to u
    weights = z**2 / rho
    mid = 0.5 * (lo + hi)
    near_hi = 1.0 - float(np.sum(weights / (lam - mid))) >= 0  # f decreasing: the root lies above mid
    pole = hi if near_hi else lo
    offsets = lam - pole

    def secular(t: float) -> float:
        return 1.0 - float(np.sum(weights / (offsets - t)))

    half = mid - pole  # negative when measuring from the upper pole
    tiny = abs(half) * 1e-300
    a, b = (half, -tiny) if near_hi else (tiny, half)
    return float(pole + brentq(secular, a, b, xtol=1e-300, rtol=1e-15, maxiter=500))


def effective_extremes(problem: Problem) -> tuple[float, float]:
    """``(lambda*_max, lambda*_min)`` without the full spectrum where d is large."""
    if problem.d <= _DENSE_MAX_D:
        mu = effective_eigvals(problem)
        return float(mu[0]), float(mu[-1])
    lam, z, rho = problem.eigvals, problem.eigvals * problem.u_eig, problem.u_norm_H2
    return _secular_root(lam, z, rho, 0), _secular_root(lam, z, rho, problem.d - 2)


def kappa_star(problem: Problem) -> float:
    """Effective condition number ``lambda*_max / lambda*_min`` (1 when d = 1 or 2 degenerate)."""
    if problem.d < 2:
        return 1.0
    hi, lo = effective_extremes(problem)
    return hi / lo


def bngd_stability_edge(problem: Problem) -> float:
    """``2 / lambda*_max``: the effective step size above which the linearised BNGD is unstable."""
    return 2.0 / effective_extremes(problem)[0]


def bngd_rate(problem: Problem, eff_step) -> np.ndarray:
    """``rho*(eps_hat) = max(|1 - eps_hat lambda*_max|, |1 - eps_hat lambda*_min|)``: per-step contraction
    of the direction error; the loss gap contracts by its square."""
    hi, lo = effective_extremes(problem)
    eff_step = np.asarray(eff_step, dtype=np.float64)
    return np.maximum(np.abs(1 - eff_step * hi), np.abs(1 - eff_step * lo))


def bngd_optimal_rate(problem: Problem) -> float:
    """``(kappa* - 1) / (kappa* + 1)``, reached at ``eps_hat = 2 / (lambda*_max + lambda*_min)``."""
    k = kappa_star(problem)
    return (k - 1) / (k + 1)


def effective_step_size(eps, a, w_norm_H) -> np.ndarray:
    """``eps_hat = eps a^2 / ||w||_H^2`` (SPEC F6)."""
    return np.asarray(eps) * np.asarray(a) ** 2 / np.asarray(w_norm_H) ** 2


# -- measuring on trajectories ----------------------------------------------------------------------------
def measured_rate(steps, excess_loss, upper: float = 1e-3, floor: float = 1e-12) -> np.ndarray:
    """Asymptotic per-step contraction of the loss gap, per run (last axis), estimated from a trajectory.

    Fits ``log gap`` linearly in the step over the later half of the stretch that starts after the gap last
    exceeded ``upper`` (relative to the initial gap: past the transient) and ends where it first falls to
    ``floor`` (above round-off). NaN where that stretch has fewer than three points (not converged far enough,
    or diverged).
    """
    steps = np.asarray(steps, dtype=np.float64)
    gap = np.asarray(excess_loss, dtype=np.float64)
    squeeze = gap.ndim == 1
    gap = gap[:, None] if squeeze else gap
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = gap / gap[0]
    out = np.full(gap.shape[1], np.nan)
    for i in range(gap.shape[1]):  # a few vector ops per run on already-computed data
        r = rel[:, i]
        above = np.flatnonzero(~(r <= upper))  # NaN counts as above: a diverged run yields no stretch
        start = above[-1] + 1 if len(above) else 0
        below = np.flatnonzero(r[start:] <= floor)
        stop = start + below[0] if len(below) else len(r)
        stretch = np.arange(start, stop)[(stop - start) // 2 :]
        if len(stretch) >= 3:
            out[i] = np.exp(np.polyfit(steps[stretch], np.log(gap[stretch, i]), 1)[0])
    return out[0] if squeeze else out


def steps_to_tolerance(steps, excess_loss, tol: float) -> np.ndarray:
    """First recorded step at which ``gap <= tol * gap_0``, per run; ``inf`` where it never happens."""
    steps = np.asarray(steps, dtype=np.float64)
    gap = np.asarray(excess_loss, dtype=np.float64)
    reached = gap <= tol * gap[0]
    first = np.argmax(reached, axis=0)
    return np.where(reached.any(axis=0), steps[first], np.inf)


@dataclass(frozen=True)
class Summary:
    """The closed-form quantities of one problem (what ``bnlab theory`` prints)."""

    d: int
    lambda_max: float
    lambda_min: float
    kappa: float
    gd_threshold: float
    gd_optimal_eps: float
    gd_optimal_rate: float
    lambda_star_max: float
    lambda_star_min: float
    kappa_star: float
    bngd_stability_edge: float
    bngd_optimal_rate: float
    u_norm_H: float
    j_star: float


def summarise(problem: Problem) -> Summary:
    hi, lo = effective_extremes(problem) if problem.d > 1 else (np.nan, np.nan)
    k_star = hi / lo if problem.d > 1 else 1.0
    return Summary(
        d=problem.d,
        lambda_max=problem.lambda_max,
        lambda_min=problem.lambda_min,
        kappa=problem.kappa,
        gd_threshold=gd_threshold(problem),
        gd_optimal_eps=gd_optimal_eps(problem),
        gd_optimal_rate=gd_optimal_rate(problem),
        lambda_star_max=hi,
        lambda_star_min=lo,
        kappa_star=k_star,
        bngd_stability_edge=2.0 / hi if problem.d > 1 else np.inf,
        bngd_optimal_rate=(k_star - 1) / (k_star + 1),
        u_norm_H=float(np.sqrt(problem.u_norm_H2)),
        j_star=problem.j_star,
    )
