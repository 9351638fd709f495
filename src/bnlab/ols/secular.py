"""All roots of the secular equation of a rank-one downdate, compiled (the eigenvalues of ``H*`` at large d).

``diag(poles) - z z^T / rho`` (poles distinct and descending after deflation, weights ``z_i^2 / rho > 0``) has one
eigenvalue in each interval ``(poles[j+1], poles[j])``: the root of

    ``f(mu) = 1 - sum_i weights_i / (poles_i - mu)``,

which falls from +inf to -inf across the interval. Each root is found as an offset ``t`` from its nearer pole
(``poles_i - mu = (poles_i - pole) - t``), so that a root close to a pole keeps its relative precision (the shift
LAPACK's dlaed4 uses), by bisection: geometric while the bracket spans more than a factor 2 (a root can sit
within 1e-300 of its pole), then arithmetic down to a relative width of 1e-16. O(d) per evaluation, about 60
evaluations per root: O(d^2) for the spectrum, where a dense eigensolver is O(d^3) (at d = 3000, 3 s against
13 s, measured while other jobs ran).
"""

from __future__ import annotations

import numba
import numpy as np


def deflation_groups(lam: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How ``diag(lam) - z z^T / rho`` (lam descending) deflates: ``(zero, group)``.

    ``zero`` marks the coordinates with ``|z_i| <= 8 eps ||z||`` (u orthogonal to that eigenvector of H: ``lam_i``
    is an eigenvalue outright; dropping such a z_i moves the eigenvalues by at most ``8 eps lambda_max``, a dense
    solver's accuracy). ``group`` numbers the runs of equal eigenvalues among the other coordinates (0, 1, ...,
    descending; a new group starts where lam drops by more than round-off): a group of m members keeps its
    eigenvalue m - 1 times, on the part of its eigenspace orthogonal to z there. ``group`` is -1 on ``zero``.
    """
    zero = np.abs(z) <= 8 * np.finfo(np.float64).eps * np.linalg.norm(z)
    lam_r = lam[~zero]
    new_group = np.r_[True, lam_r[:-1] - lam_r[1:] > 4 * np.finfo(np.float64).eps * lam_r[:-1]]
    group = np.full(lam.shape, -1)
    group[~zero] = np.cumsum(new_group) - 1
    return zero, group


def deflate(lam: np.ndarray, z: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``diag(lam) - z z^T / rho`` into eigenvalues known outright and a reduced secular problem.

    - ``z_i = 0`` (u orthogonal to an eigenvector of H, e.g. a sparse u with H diagonal): ``lam_i`` is an
      eigenvalue of H* and its pole must leave the secular equation (kept, the root found between it and
      its neighbour would be the pole itself). ``|z_i| <= 8 eps ||z||`` counts as zero: dropping it moves
      the eigenvalues by at most ``8 eps ||z||^2 / rho <= 8 eps lambda_max``, a dense solver's accuracy.
    - a repeated eigenvalue (spiked spectra): a rotation inside its eigenspace puts all of z's weight
      there on one coordinate, ``sqrt(sum z_i^2)``, so ``lam`` stays an eigenvalue (multiplicity - 1).

    Returns ``(fixed eigenvalues, distinct poles descending, weights z^2 / rho > 0)``.
    """
    zero, group = deflation_groups(lam, z)
    fixed = [lam[zero]]
    group, w_r = group[~zero], z[~zero] ** 2 / rho
    poles = lam[~zero][np.r_[True, group[1:] != group[:-1]]]
    weights = np.bincount(group, weights=w_r, minlength=len(poles))
    fixed.append(np.repeat(poles, np.bincount(group) - 1))
    return np.concatenate(fixed), poles, weights


@numba.njit(cache=True)
def _f(offsets: np.ndarray, weights: np.ndarray, t: float) -> float:
    s = 0.0
    for i in range(offsets.shape[0]):
        s += weights[i] / (offsets[i] - t)
    return 1.0 - s


@numba.njit(cache=True)
def secular_root(poles: np.ndarray, weights: np.ndarray, j: int) -> float:
    """The root in ``(poles[j+1], poles[j])``."""
    lo, hi = poles[j + 1], poles[j]
    mid = 0.5 * (lo + hi)
    near_hi = _f(poles - mid, weights, 0.0) >= 0.0  # f decreasing: the root lies above mid
    pole = hi if near_hi else lo
    offsets = poles - pole
    half = mid - pole  # negative when measuring from the upper pole
    tiny = abs(half) * 1e-300
    # Bracket [a, b] with f(a) >= 0 > f(b) (t increasing means mu increasing, f falling).
    a, b = (half, -tiny) if near_hi else (tiny, half)
    for _ in range(2200):
        if a * b > 0 and max(abs(a), abs(b)) > 2 * min(abs(a), abs(b)):
            m = np.sign(a) * np.sqrt(abs(a) * abs(b))
        else:
            m = 0.5 * (a + b)
        if m == a or m == b or abs(b - a) <= 1e-16 * max(abs(a), abs(b)):
            break
        if _f(offsets, weights, m) >= 0.0:
            a = m
        else:
            b = m
    return pole + 0.5 * (a + b)


@numba.njit(cache=True)
def secular_roots(poles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The ``len(poles) - 1`` roots between consecutive poles (``poles`` distinct, descending; ``weights`` > 0),
    descending."""
    out = np.empty(poles.shape[0] - 1)
    for j in range(poles.shape[0] - 1):
        out[j] = secular_root(poles, weights, j)
    return out
