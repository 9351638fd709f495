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
from bnlab.ols.flanks import EffectiveStepCurve, fewest_steps, flank_constant
from bnlab.ols.problem import Problem
from bnlab.ols.secular import deflate, secular_root, secular_roots

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
    beyond, the problem is deflated (:func:`bnlab.ols.secular.deflate`) and the rest solve the secular equation
    ``1 = sum_i z_i^2 / (rho (lambda_i - mu))``, one root between consecutive poles; the remaining
    eigenvalue is 0 (``H* u = 0``).
    """
    lam, z, rho = problem.eigvals, problem.eigvals * problem.u_eig, problem.u_norm_H2
    if problem.d == 1:
        return np.empty(0)
    if problem.d <= _DENSE_MAX_D:
        mu = np.linalg.eigvalsh(np.diag(lam) - np.outer(z, z) / rho)[::-1]
        return mu[:-1]
    fixed, poles, weights = deflate(lam, z, rho)
    roots = secular_roots(poles, weights) if len(poles) > 1 else np.empty(0)
    return np.sort(np.r_[fixed, roots])[::-1].copy()


def effective_extremes(problem: Problem) -> tuple[float, float]:
    """``(lambda*_max, lambda*_min)`` without the full spectrum, at any d: the deflated eigenvalues and the two
    outer roots of the secular equation (:func:`effective_eigvals`), O(d) where a dense solver is O(d^3)."""
    if problem.d < 2:
        raise BnlabError("H* has no non-zero eigenvalue when d = 1")
    fixed, poles, weights = deflate(problem.eigvals, problem.eigvals * problem.u_eig, problem.u_norm_H2)
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
    ``s = eps_hat_opt / eps_hat_F`` (``F`` for large kappa*). ``lower`` and ``upper`` are the window's ends: where
    the law's step count is F times its fewest, ``[eps_lo / s, s eps_hi]`` when the window is wide and both flanks
    start aligned, inside that when the two flanks meet, and moved by what each flank's start direction costs
    (:func:`window_law`); ``width`` is its length in decades. ``best_rate`` is ``rho*`` at the best effective step
    the run reaches; ``best_steps`` the law's fewest steps to ``tol`` (NaN without it).
    """

    eps_lo: np.ndarray
    eps_hi: np.ndarray
    factor: float
    flank: float  # s = eps_hat_opt / eps_hat_F
    lower: np.ndarray
    upper: np.ndarray
    best_rate: np.ndarray
    best_steps: np.ndarray  # the law's fewest steps to tol (held over ``sustain`` decades); NaN without tol

    @property
    def width(self) -> np.ndarray:
        return np.log10(self.upper / self.lower)


def window_law(
    problem: Problem, w0, a0=1.0, factor: float = 10.0, tol: float | None = None, sustain: float = 0.0
) -> WindowLaw:
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

    The steps to a tolerance are ``N = 1 + L / -log rho*(eps_hat_inf)^2`` (the first step only sets
    ``a_1 = p_0`` and, past eps_hi, ``||w||``), and for ``eps_hat <= eps_hat_opt`` ``rho* = 1 - eps_hat
    lambda*_min``: they grow like ``1 / eps_hat`` on both flanks. Between the flanks
    ``eps_hat_inf`` settles at ``eps_hat_b = min(eps_hat_opt, eps_hat_max)`` (``eps_hat_max = ||u||^2 / (2 G
    ||w0||)``, the most the formula above reaches, at ``eps = ||w0|| / G``: when ``a*/a0`` is small the flanks
    meet before ``eps_hat_inf`` gets to ``eps_hat_opt``, e.g. a standardised target with ``a0 = 1``, and the best
    is slower). ``L`` is the flank's start direction's cost (:mod:`bnlab.ols.flanks`): ``L_0`` from w0 on the
    small-eps flank and between the flanks, ``L_1`` from the first step's direction ``-grad_w J(a0, w0)`` from
    where ``eps_hat_inf`` falls back under ``eps_hat_b`` on the large-eps side (``eps_1``, the upper root of
    ``eps_hat_inf(eps) = eps_hat_b``). Without ``tol`` both are ``ln(1/tol)``: the whole gap in the slowest mode,
    w aligned from the start. With it, ``L = T + J``: T counts the tail from the share of the gap each mode
    holds once w is aligned (the first large step leaves the deflated modes of H*, the bulk of a spiked spectrum,
    only w0's remnant, and the rest decays at the faster ``mu_rest``), J the steps the turn towards u takes
    before the effective step reaches its limit (``~ (lambda*_min / R) ln(1 / cos^2)`` of the start's
    H-angle to u, R the Rayleigh quotient of H along the turn).

    The fewest steps are ``N_b = 1 + min(L_0, L_1) / -log rho*(eps_hat_b)^2`` (``L_1``: at ``eps_1``, the upper
    band's first eps), or with ``sustain`` > 0 the lowest level held over ``sustain`` decades of eps (as
    :func:`bnlab.experiments.windows.lr_window` measures it with ``sustain`` grid points: ``(n - 1) /
    per_decade`` decades). The ends are where ``N = F N_b``: ``eps_hat_F = (1 - exp(-L / (2 (F N_b - 1)))) /
    lambda*_min`` with the flank's ``L``, the lower end the lower root of ``eps_hat_inf(eps) = eps_hat_F``
    (``eps_1`` where even the plateau between the flanks is over ``F N_b``), the upper end the upper root. With
    ``L_0 = L_1`` and ``eps_lo << eps_hi`` that is ``[eps_lo / s, s eps_hi]`` with ``s = eps_hat_opt /
    eps_hat_F`` (``F`` for large kappa*). ``||w0||`` cancels from the width (it multiplies ``eps_lo`` by
    ``||w0||^2`` and ``G^2`` by ``||w0||^-2``; L depends on directions only): it shifts the window. ``a0 = 0``
    leaves w where it is for one step; the second step, with ``a_1 = w0^T g / ||w0||_H``, then plays the first
    one's role.

    Args:
        problem: the least-squares problem.
        w0: initial weights, ``(d,)`` or a batch ``(B, d)``, in the original coordinates.
        a0: initial BN scale(s), scalar or ``(B,)``.
        factor: F > 1.
        tol: the tolerance the steps are counted to (``gap <= tol gap_0``), or None to leave out what the start
            directions cost (``L_0 = L_1``).
        sustain: decades of eps over which the fewest steps must be held (0: the minimum).
    Returns:
        :class:`WindowLaw` with ``(B,)`` arrays (0-d for a single ``w0`` and scalar ``a0``).
    """
    if not factor > 1:
        raise BnlabError(f"factor must be > 1, got {factor}")
    if tol is not None and not 0 < tol < 1:
        raise BnlabError(f"tol must be in (0, 1), got {tol}")
    if not sustain >= 0:
        raise BnlabError(f"sustain must be >= 0 decades, got {sustain}")
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
    curve = EffectiveStepCurve(slope_small, slope_large)
    eps_lo, eps_hi = eh_opt / slope_small, slope_large / eh_opt
    eh_best = np.minimum(eh_opt, 0.5 * np.sqrt(slope_small * slope_large))
    if tol is None:  # counts in units of log(1/tol): the first step, one whole step, is left out with tol
        l_small, l_large, first = np.ones(len(w)), np.ones(len(w)), 0.0
    else:
        e0 = _direction_gap(problem, w)
        l_small, l_large = (flank_constant(problem, start, e0, tol, lo) for start in (w, grad))
        first = 1.0
    best = fewest_steps(curve, eh_best, l_small, l_large, lo, sustain, first)
    # Where each flank's count is F times the best (the plateau and the upper band's start where it never is).
    eh_f_small, eh_f_large = (-np.expm1(-ell / (2 * (factor * best - first))) / lo for ell in (l_small, l_large))
    start_1 = curve.upper_root(eh_best)
    lower = np.where(eh_f_small <= eh_best, curve.lower_root(np.minimum(eh_f_small, eh_best)), start_1)
    upper = np.where(eh_f_large <= eh_best, curve.upper_root(np.minimum(eh_f_large, eh_best)), start_1)
    rho_opt = 1 - eh_opt * lo
    flank = eh_opt * lo / -np.expm1(np.log(rho_opt) / factor) if rho_opt > 0 else factor
    best_rate = 1 - eh_best * lo
    best_steps = best if tol is not None else np.full(len(w), np.nan)
    out = (eps_lo, eps_hi, lower, upper, best_rate, best_steps)
    if single:
        out = tuple(x[0] for x in out)
    eps_lo, eps_hi, lower, upper, best_rate, best_steps = out
    return WindowLaw(
        eps_lo=eps_lo,
        eps_hi=eps_hi,
        factor=float(factor),
        flank=float(flank),
        lower=lower,
        upper=upper,
        best_rate=best_rate,
        best_steps=best_steps,
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
