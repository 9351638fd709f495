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

from bnlab.errors import BnlabError
from bnlab.ols.problem import Problem
from bnlab.ols.secular import secular_root, secular_roots

# Up to this dimension H*'s spectrum comes from a dense eigensolver; beyond it, from the secular equation
# (compiled, O(d^2): 5x faster than the dense solver at d = 1000). Its extremes come from the secular equation at
# every d.
_DENSE_MAX_D = 64


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
    rank-one downdate whose eigenvalues interlace with lambda. Up to d = 64 a dense eigensolver gives them;
    beyond, the problem is deflated (:func:`_deflate`) and the rest solve the secular equation
    ``1 = sum_i z_i^2 / (rho (lambda_i - mu))``, one root between consecutive poles; the remaining
    eigenvalue is 0 (``H* u = 0``).
    """
    lam, z, rho = problem.eigvals, problem.eigvals * problem.u_eig, problem.u_norm_H2
    if problem.d == 1:
        return np.empty(0)
    if problem.d <= _DENSE_MAX_D:
        mu = np.linalg.eigvalsh(np.diag(lam) - np.outer(z, z) / rho)[::-1]
        return mu[:-1]
    fixed, poles, weights = _deflate(lam, z, rho)
    roots = secular_roots(poles, weights) if len(poles) > 1 else np.empty(0)
    return np.sort(np.r_[fixed, roots])[::-1].copy()


def _deflate(lam: np.ndarray, z: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``diag(lam) - z z^T / rho`` into eigenvalues known outright and a reduced secular problem.

    - ``z_i = 0`` (u orthogonal to an eigenvector of H, e.g. a sparse u with H diagonal): ``lam_i`` is an
      eigenvalue of H* and its pole must leave the secular equation (kept, the root found between it and
      its neighbour would be the pole itself). ``|z_i| <= 8 eps ||z||`` counts as zero: dropping it moves
      the eigenvalues by at most ``8 eps ||z||^2 / rho <= 8 eps lambda_max``, a dense solver's accuracy.
    - a repeated eigenvalue (spiked spectra): a rotation inside its eigenspace puts all of z's weight
      there on one coordinate, ``sqrt(sum z_i^2)``, so ``lam`` stays an eigenvalue (multiplicity - 1).

    Returns ``(fixed eigenvalues, distinct poles descending, weights z^2 / rho > 0)``.
    """
    zero = np.abs(z) <= 8 * np.finfo(np.float64).eps * np.linalg.norm(z)
    fixed = [lam[zero]]
    lam_r, w_r = lam[~zero], z[~zero] ** 2 / rho
    # Groups of equal eigenvalues (lam descending): a new group starts where lam drops by more than round-off.
    new_group = np.r_[True, lam_r[:-1] - lam_r[1:] > 4 * np.finfo(np.float64).eps * lam_r[:-1]]
    group = np.cumsum(new_group) - 1
    poles = lam_r[new_group]
    weights = np.bincount(group, weights=w_r, minlength=len(poles))
    fixed.append(np.repeat(poles, np.bincount(group) - 1))
    return np.concatenate(fixed), poles, weights


def effective_extremes(problem: Problem) -> tuple[float, float]:
    """``(lambda*_max, lambda*_min)`` without the full spectrum, at any d: the deflated eigenvalues and the two
    outer roots of the secular equation (:func:`effective_eigvals`), O(d) where a dense solver is O(d^3)."""
    if problem.d < 2:
        raise BnlabError("H* has no non-zero eigenvalue when d = 1")
    fixed, poles, weights = _deflate(problem.eigvals, problem.eigvals * problem.u_eig, problem.u_norm_H2)
    ends = [secular_root(poles, weights, 0), secular_root(poles, weights, len(poles) - 2)] if len(poles) > 1 else []
    candidates = np.r_[fixed, ends]
    return float(candidates.max()), float(candidates.min())


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


# -- BNGD's learning-rate window (eps_a = 1) --------------------------------------------------------------
def bngd_optimal_eff_step(problem: Problem) -> float:
    """``eps_hat_opt = 2 / (lambda*_max + lambda*_min)``, the effective step minimising ``rho*``."""
    hi, lo = effective_extremes(problem)
    return 2.0 / (hi + lo)


@dataclass(frozen=True)
class WindowLaw:
    """BNGD's predicted ``F``-window of eps (steps to a tolerance within ``F`` times the best), per run.

    ``eps_lo`` and ``eps_hi`` are the eps at which the limit effective step equals ``eps_hat_opt`` on the
    small-eps flank (w does not grow) and on the large-eps flank (the first step sets ``||w||``); ``flank`` is
    ``s = eps_hat_opt / eps_hat_F`` (``F`` for large kappa*). ``lower`` and ``upper`` are the window's ends,
    ``[eps_lo / s, s eps_hi]`` when the window is wide and inside that when the two flanks meet
    (:func:`window_law`); ``width`` is its length in decades. ``best_rate`` is ``rho*`` at the best effective step
    the run reaches, so the law's fewest steps to a tolerance are ``log(1/tol) / -log best_rate^2``.
    """

    eps_lo: np.ndarray
    eps_hi: np.ndarray
    factor: float
    flank: float  # s = eps_hat_opt / eps_hat_F
    lower: np.ndarray
    upper: np.ndarray
    best_rate: np.ndarray

    @property
    def width(self) -> np.ndarray:
        return np.log10(self.upper / self.lower)


def window_law(problem: Problem, w0, a0=1.0, factor: float = 10.0, tol: float | None = None) -> WindowLaw:
    """The window law of BNGD with ``eps_a = 1`` and tolerance-based step counts (SPEC section 2b).

    At the limit w is parallel to u, so ``||w_inf||_H = ||w_inf|| a* / ||u||`` with ``a* = ||u||_H`` and the
    effective step is ``eps_hat_inf = eps a*^2 / ||w_inf||_H^2 = eps ||u||^2 / ||w_inf||^2``. By F3,
    ``||w_inf||^2 = ||w0||^2 + sum_k eps^2 ||grad_w J_k||^2``; keeping ``w0`` and the first step,

        ``eps_hat_inf(eps) ~ eps ||u||^2 / (||w0||^2 + eps^2 G^2)``,  ``G = ||grad_w J(a0, w0)||``.

    - small eps: w barely grows, ``eps_hat_inf = eps ||u||^2 / ||w0||^2``, which is ``eps_hat_opt`` at
      ``eps_lo = eps_hat_opt ||w0||^2 / ||u||^2``;
    - large eps: the first step dominates (later steps add little once ``eps_hat`` is under the stability
      edge), ``eps_hat_inf = ||u||^2 / (eps G^2)``, which is ``eps_hat_opt`` at
      ``eps_hi = ||u||^2 / (eps_hat_opt G^2)``.

    Past the transient the steps to a tolerance are ``log(1/tol) / -log rho*(eps_hat)^2``, and for
    ``eps_hat <= eps_hat_opt`` ``rho* = 1 - eps_hat lambda*_min``: they grow like ``1 / eps_hat`` on both flanks.
    The fewest are at ``eps_hat_b = min(eps_hat_opt, eps_hat_max)``, where ``eps_hat_max = ||u||^2 / (2 G
    ||w0||)`` is the most the formula above reaches (at ``eps = ||w0|| / G``): when ``a*/a0`` is small the flanks
    meet before ``eps_hat_inf`` gets to ``eps_hat_opt`` (``eps_lo ~ eps_hi``, e.g. a standardised target with
    ``a0 = 1``), the best is slower, and F times it reaches further out. They are F times the best at
    ``eps_hat_F``, ``-log rho*(eps_hat_F) = -log rho*(eps_hat_b) / F``, i.e.
    ``eps_hat_F = (1 - rho_b^(1/F)) / lambda*_min``; the ends are the two roots of
    ``eps_hat_inf(eps) = eps_hat_F``. When ``eps_lo << eps_hi`` they are ``[eps_lo / s, s eps_hi]`` with
    ``s = eps_hat_opt / eps_hat_F`` (``F`` for large kappa*). ``||w0||`` cancels from the width (it multiplies
    ``eps_lo`` by ``||w0||^2`` and ``G^2`` by ``||w0||^-2``): it shifts the window and does not widen it.
    ``a0 = 0`` leaves w where it is for one step; the second step, with ``a_1 = w0^T g / ||w0||_H``, then plays
    the first one's role.

    With ``tol`` (steps counted to ``gap <= tol gap_0``), the upper end also counts what the first step buys:
    for large eps it puts w along ``-grad_w J(a0, w0)``, leaving the direction part of the gap at
    ``r = ||e_1||_H^2 / ||e_0||_H^2`` (``e = u - (w^T g / ||w||_H^2) w``), so the flank needs
    ``log(r / tol) / log(1 / tol)`` of the steps and the upper end moves out by the inverse of that. It matters
    where H is near isotropic (the gradient then points close to u: small d on spiked spectra).

    Args:
        problem: the least-squares problem.
        w0: initial weights, ``(d,)`` or a batch ``(B, d)``, in the original coordinates.
        a0: initial BN scale(s), scalar or ``(B,)``.
        factor: F > 1.
        tol: the tolerance the steps are counted to, or None to leave out the first step's gain.
    Returns:
        :class:`WindowLaw` with ``(B,)`` arrays (0-d for a single ``w0`` and scalar ``a0``).
    """
    if not factor > 1:
        raise BnlabError(f"factor must be > 1, got {factor}")
    if tol is not None and not 0 < tol < 1:
        raise BnlabError(f"tol must be in (0, 1), got {tol}")
    single = np.ndim(w0) == 1 and np.ndim(a0) == 0
    w = problem.to_eig(np.atleast_2d(np.asarray(w0, dtype=np.float64)))
    lam, g = problem.eigvals, problem.g_eig
    whw = (w * w) @ lam
    wg = w @ g
    a = np.asarray(a0, dtype=np.float64)
    a = np.where(a == 0, wg / np.sqrt(whw), a)
    grad = (a / np.sqrt(whw))[:, None] * (g - (wg / whw)[:, None] * lam * w)  # -grad_w J(a0, w0)
    u_norm = float(np.linalg.norm(problem.u_eig))
    a_star = float(np.sqrt(problem.u_norm_H2))
    hi, lo = effective_extremes(problem)
    eh_opt = 2.0 / (hi + lo)
    # eps_hat_inf per unit eps when ||w_inf|| = ||w0|| (A), and times eps when ||w_inf|| = eps G (B).
    slope_small = effective_step_size(1.0, a_star, np.linalg.norm(w, axis=1) * a_star / u_norm)
    slope_large = effective_step_size(1.0, a_star, np.linalg.norm(grad, axis=1) * a_star / u_norm)
    eps_lo, eps_hi = eh_opt / slope_small, slope_large / eh_opt
    # The best effective step reached, and the one F times slower (rho* = 1 - eps_hat lambda*_min up to eh_opt).
    eh_best = np.minimum(eh_opt, 0.5 * np.sqrt(slope_small * slope_large))
    eh_f = -np.expm1(np.log1p(-eh_best * lo) / factor) / lo
    # Roots of eps / (1/A + eps^2/B) = eh_F: eps = B/(2 eh_F) (1 -+ sqrt(1 - x)), x = 4 eh_F^2 / (A B) < 1.
    root = np.sqrt(np.clip(1 - 4 * eh_f**2 / (slope_small * slope_large), 0.0, None))
    lower = 2 * eh_f / slope_small / (1 + root)
    upper = slope_large / (2 * eh_f) * (1 + root)
    if tol is not None:
        kept = _direction_gap(problem, grad) / _direction_gap(problem, w)
        gain = np.log(1 / tol) / np.maximum(np.log(kept / tol), np.finfo(np.float64).tiny)
        eps_hi, upper = eps_hi * gain, upper * gain
    rho_opt = 1 - eh_opt * lo
    flank = eh_opt * lo / -np.expm1(np.log(rho_opt) / factor) if rho_opt > 0 else factor
    best_rate = 1 - eh_best * lo
    if single:
        eps_lo, eps_hi, lower, upper, best_rate = eps_lo[0], eps_hi[0], lower[0], upper[0], best_rate[0]
    return WindowLaw(
        eps_lo=eps_lo,
        eps_hi=eps_hi,
        factor=float(factor),
        flank=float(flank),
        lower=lower,
        upper=upper,
        best_rate=best_rate,
    )


def _direction_gap(problem: Problem, w: np.ndarray) -> np.ndarray:
    """``||e||_H^2`` with ``e = u - (w^T g / ||w||_H^2) w``, for eigenbasis weights ``w`` (B, d)."""
    lam, g, u = problem.eigvals, problem.g_eig, problem.u_eig
    e = u - ((w @ g) / ((w * w) @ lam))[:, None] * w
    return (e * e) @ lam


def window_width_isotropic(problem: Problem, a0: float = 1.0, factor: float = 10.0) -> float:
    """The window law's width for isotropic u and w0 in high dimension, in decades:
    ``2 log10 F + log10[(a*/a0)^2 (lambda*_max + lambda*_min)^2 / (4 m2)]`` with ``m2`` the mean of lambda^2.

    From :func:`window_law` with ``||g||^2 ~ ||u||^2 m2``, ``||w0||_H^2 ~ ||w0||^2 m1`` and
    ``a*^2 ~ ||u||^2 m1`` (``m1`` the mean of lambda), the projection term of the gradient being O(1/d).
    """
    hi, lo = effective_extremes(problem)
    m2 = float(np.mean(problem.eigvals**2))
    ratio = problem.u_norm_H2 / a0**2 * (hi + lo) ** 2 / (4 * m2)
    return float(2 * np.log10(factor) + np.log10(ratio))


# -- measuring on trajectories ----------------------------------------------------------------------------
def measured_rate(steps, excess_loss, upper: float = 1e-3, floor: float = 1e-12) -> np.ndarray:
    """Asymptotic per-step contraction of the loss gap, per run (last axis), estimated from a trajectory.

    Fits ``log gap`` linearly in the step over the later half of the stretch that starts after the gap last
    exceeded ``upper`` (relative to the initial gap: past the transient) and ends where it first falls to
    ``floor``, or to ``ROUNDOFF_MARGIN`` times the run's round-off floor where the gap lies flat on one before
    ``floor`` (:func:`roundoff_floor`). NaN where that stretch has fewer than three points (not converged far
    enough, or diverged).
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
        below = np.flatnonzero(r[start:] <= max(floor, ROUNDOFF_MARGIN * roundoff_floor(r[start:])))
        stop = start + below[0] if len(below) else len(r)
        stretch = np.arange(start, stop)[(stop - start) // 2 :]
        if len(stretch) >= 3:
            out[i] = np.exp(np.polyfit(steps[stretch], np.log(gap[stretch, i]), 1)[0])
    return out[0] if squeeze else out


# A fit stops this far above a round-off floor: there the floor is under 0.1% of the gap fitted, so it moves the
# fitted log gap by under 1e-3 at the stretch's end.
ROUNDOFF_MARGIN = 1e3


def roundoff_floor(rel_gap, flat_for: float = 0.1) -> float:
    """The level a recorded gap lies flat on at the end of a run after falling fast onto it (round-off: the gap
    formulas resolve the direction error to some ulps of ||u||; floors of 1e-26 .. 6e-24 of the initial gap seen
    on kappa = 1e4 and spiked problems), or 0 where it has none.

    Flat: from the first record that is within 2x of every later one (a decaying gap is so only near its end, a
    round-off floor jitters by a few percent) for at least ``flat_for`` of the records, after a fall of at least
    ``ROUNDOFF_MARGIN`` over the ``flat_for`` of the records before (a gap still decaying slowly over the whole
    run has no such break); the level is the smallest gap there. A fit running into it reads the flat stretch as
    a rate of 1 (seen: 1.000000 against rho*^2 = 0.998494 on a spiked d = 1000 problem whose floor was 6e-24 of
    its start, with a fit meant to end at 1e-24)."""
    r = np.asarray(rel_gap, dtype=np.float64)
    if r.size == 0 or not np.isfinite(r).all():
        return 0.0
    later_min = np.minimum.accumulate(r[::-1])[::-1]
    first = int(np.argmax(r <= 2 * later_min))
    span = int(np.ceil(flat_for * r.size))
    flat = r.size - first >= span and r[max(first - span, 0)] >= ROUNDOFF_MARGIN * later_min[first]
    return float(later_min[first]) if flat else 0.0


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
