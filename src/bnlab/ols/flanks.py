"""The window law's step counts along eps (BNGD, eps_a = 1), and what a start direction costs on its flanks.

On both flanks the effective step is small, and the direction of w moves by the continuous-time limit of BNGD,
so the steps to a tolerance are ``L / -log rho*(eps_hat_inf)^2`` with a constant ``L`` set by the direction the
flank starts from: ``w0`` on the small-eps flank (w barely moves in norm), the first step's ``-grad_w J(a0, w0)``
on the large-eps flank (it sets ``||w||``). ``L = ln(1/tol)`` when the whole gap sits in the slowest mode and w
starts aligned; :func:`flank_constant` gives ``L = T + J`` for a real start:

- **The tail, T.** Work in ``v = H^{1/2} w``, ``h = H^{1/2} u`` (``||h|| = a*``), split ``v = beta h + zeta`` with
  zeta orthogonal to h. One BNGD step is exactly a gradient step of size ``gamma ~ eps_hat`` towards ``h / c``
  (``c = v^T h / ||v||^2``): ``zeta <- (I - gamma P H P) zeta + gamma (||zeta||^2 / (beta a*^2)) P H h``, P the
  projector off h. On an eigenvector psi of ``P H P`` orthogonal to ``P H h`` the second term vanishes, so that
  mode only contracts, by ``1 - gamma mu``: these are the deflated modes of ``H*`` (u orthogonal to an
  eigenvector of H, or a repeated eigenvalue of H minus u's part there: the bulk of a spiked spectrum), and
  their part of the gap is ``a*^2 (zeta_psi / ||v||)^2 / 2``. Once aligned, ``||v||^2 = ||w||^2 R_H(u)``
  (``R_H`` the Rayleigh quotient of H, ``||w||`` constant to first order), so a deflated mode's share of the
  direction gap ``||e0||_H^2`` at w0 becomes ``S = a*^2 q R_H(w_s) / (R_H(u) ||e0||_H^2)``, ``q`` its share of the
  start's unit ``v``: a first step along the spike leaves the bulk a small ``q`` but a 10-30x larger ``R_H``. The
  other modes keep the rest of the start's direction gap, ``||e_s||_H^2 - a*^2 x_s sum q`` (``x_s`` the start's
  ``cos^2`` to h), contracting no slower than the smallest eigenvalue ``mu_rest`` of H* outside the deflated
  ones. In units of ``2 mu_min`` per unit of effective step, ``T = max(mu_min / mu ln(S / tol))`` over those
  parts; with no deflated mode it is ``ln(||e_s||_H^2 / (||e0||_H^2 tol))``.
- **The transient, J.** The gap's clock ``sum eps_hat`` runs late while w turns towards u: to first order in
  ``eps_hat``, ``x = cos^2`` of the H-angle grows as ``dx/dk = 2 beta R x (1 - x)`` (``beta = eps a*^2 / ||w||_H^2``,
  ``R`` the Rayleigh quotient of H at ``H^{1/2} e``) while ``eps_hat = beta x``. Taking the turn in the plane of h
  and the start's v (exact for a spiked spectrum with one spike once the small deflated part is set aside),
  ``J = mu_min int_{x_s}^1 (1/b - x) / (R x (1 - x)) dx`` with ``b = beta / eps_hat_inf`` and R along the arc. It
  is ``~ (mu_min / R) ln(1/x_s)`` when ``x_s`` is small: ~10 for a random w0 at d = 1000 on a spiked spectrum,
  where R is small; ~1 where R is several times ``mu_min``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlab.ols.problem import Problem
from bnlab.ols.secular import deflate, deflation_groups, secular_root

# Quadrature of the transient's integral in t = ln(x / (1 - x)), from the start to where 1 - x ~ e^-40.
_T_END = 40.0
_NODES = 512
_X_MIN = 1e-300  # a start exactly orthogonal to u (in the H inner product) would never turn: clip its cos^2


def flank_constant(problem: Problem, ws: np.ndarray, e0_norm2: np.ndarray, tol: float, mu_min: float) -> np.ndarray:
    """``L = T + J`` (module docstring) for starts ``ws`` (B, d) in H's eigenbasis; ``e0_norm2`` (B,) is
    ``||e0||_H^2`` at w0, the reference the tolerance is taken against; ``mu_min`` is ``lambda*_min``."""
    lam = problem.eigvals
    h_hat = np.sqrt(lam) * problem.u_eig / np.sqrt(problem.u_norm_H2)
    v = np.sqrt(lam) * ws
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return _tail(problem, v, h_hat, ws, e0_norm2, tol, mu_min) + _transient(lam, v, h_hat, mu_min)


def _tail(problem, v, h_hat, ws, e0_norm2, tol, mu_min) -> np.ndarray:
    lam = problem.eigvals
    a2 = problem.u_norm_H2
    zero, group = deflation_groups(lam, lam * problem.u_eig)
    h = np.where(zero, 0.0, h_hat)
    # One bucket per group of equal eigenvalues and one per zero coordinate: q = |v_G|^2 - (v_G . h_G)^2 / |h_G|^2.
    bucket = np.where(zero, group.max() + 1 + np.cumsum(zero) - 1, group)
    n = int(bucket.max()) + 1
    rate = np.zeros(n)
    rate[bucket] = lam

    def per_bucket(values):
        out = np.zeros((len(values), n))
        np.add.at(out, (slice(None), bucket), values)
        return out

    vv, vh, hh = per_bucket(v * v), per_bucket(v * h), np.bincount(bucket, weights=h * h, minlength=n)
    q = np.clip(vv - np.divide(vh**2, hh, out=np.zeros_like(vh), where=hh > 0), 0.0, None)
    x_s = (v @ h_hat) ** 2
    rh_s = (ws * ws) @ lam / np.einsum("bi,bi->b", ws, ws)
    rh_u = a2 / float(problem.u_eig @ problem.u_eig)
    with np.errstate(divide="ignore"):
        deflated = (mu_min / rate) * np.log(a2 * q * (rh_s / rh_u)[:, None] / (e0_norm2[:, None] * tol))
        rest = np.clip(a2 * (1 - x_s - x_s * q.sum(axis=1)), 0.0, None) / e0_norm2
        parts = np.c_[deflated, (mu_min / _rest_rate(lam, problem.eigvals * problem.u_eig, a2)) * np.log(rest / tol)]
    return np.clip(parts.max(axis=1), 0.0, None)


def _rest_rate(lam: np.ndarray, z: np.ndarray, rho: float) -> float:
    """The smallest eigenvalue of H* that is not deflated: the lowest root of the reduced secular equation
    (inf where there is none)."""
    _, poles, weights = deflate(lam, z, rho)
    return float(secular_root(poles, weights, len(poles) - 2)) if len(poles) > 1 else np.inf


def _transient(lam: np.ndarray, v: np.ndarray, h_hat: np.ndarray, mu_min: float) -> np.ndarray:
    cos = v @ h_hat
    sign = np.where(cos < 0, -1.0, 1.0)  # w -> -w, a -> -a: turn towards the nearer of +-u
    n = sign[:, None] * (v - cos[:, None] * h_hat)
    sin = np.linalg.norm(n, axis=1)
    n = n / np.where(sin > 0, sin, 1.0)[:, None]
    # The plane's 2 x 2 compressions of H and H^-1 in the basis (h_hat, n).
    a_hh, a_hn, a_nn = h_hat @ (lam * h_hat), n @ (lam * h_hat), (n * n) @ lam
    b_hh, b_hn, b_nn = h_hat @ (h_hat / lam), n @ (h_hat / lam), (n * n) @ (1 / lam)
    x_s = np.clip(cos**2, _X_MIN, 1.0)
    t0 = np.minimum(np.log(x_s) - np.log1p(-np.minimum(x_s, 1 - 1e-16)), _T_END)
    t = t0[:, None] + (_T_END - t0)[:, None] * np.linspace(0.0, 1.0, _NODES)
    x = 1 / (1 + np.exp(-t))
    c, s = np.sqrt(x), np.sqrt(1 - x)
    # Along the arc v = c h_hat + s n: the error's direction is s h_hat - c n.
    rayleigh = a_hh * s**2 - 2 * a_hn[:, None] * s * c + a_nn[:, None] * c**2
    b = (b_hh * c**2 + 2 * b_hn[:, None] * c * s + b_nn[:, None] * s**2) / b_hh
    return mu_min * np.trapezoid((1 / b - x) / rayleigh, t, axis=1)


@dataclass(frozen=True)
class EffectiveStepCurve:
    """``eps_hat_inf(eps) = eps / (1/A + eps^2/B)`` per run (A, B: (B,)) and its two roots for a level."""

    small: np.ndarray  # A
    large: np.ndarray  # B

    def __call__(self, eps: np.ndarray) -> np.ndarray:
        """At eps (B, G): each run's grid."""
        return eps / (1 / self.small[:, None] + eps**2 / self.large[:, None])

    def _root(self, level: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip(1 - 4 * level**2 / (self.small * self.large), 0.0, None))

    def lower_root(self, level: np.ndarray) -> np.ndarray:
        # eps = B/(2 level) (1 - sqrt(1 - x)) = 2 level / A / (1 + sqrt(1 - x)), x = 4 level^2 / (A B) <= 1.
        return 2 * level / self.small / (1 + self._root(level))

    def upper_root(self, level: np.ndarray) -> np.ndarray:
        return self.large / (2 * level) * (1 + self._root(level))


def fewest_steps(
    curve: EffectiveStepCurve, eh_best, l_small, l_large, lo: float, sustain: float, first: float = 1.0
) -> np.ndarray:
    """The window law's fewest steps held over ``sustain`` decades of eps: the count is ``1 + L_0 / -log rho*^2``
    falling to the plateau ``1 + L_0 / -log rho*(eh_best)^2`` on ``[e_0, e_1]`` (the roots of ``eps_hat_inf =
    eh_best``), then ``1 + L_1 / -log rho*(eps_hat_inf)^2`` rising from ``e_1``. A stretch of ``sustain``
    decades holds the plateau if it fits in it, the upper band from ``e_1``, or straddles both flanks where the
    plateau is shorter. ``first``: the steps counted before the modes' clock starts (the first one)."""

    def count(ell, eps):
        return first + ell / (-2 * np.log1p(-np.minimum(curve(eps), eh_best[..., None]) * lo))

    e0, e1 = curve.lower_root(eh_best), curve.upper_root(eh_best)
    span = 10.0**sustain
    plateau = np.where(e1 >= e0 * span * (1 - 1e-12), count(l_small[:, None], e0[:, None])[:, 0], np.inf)
    band = count(l_large[:, None], (e1 * span)[:, None])[:, 0]
    # Stretches [e, e span] over the whole plateau, from the lower flank (e <= e0) to the band (e span >= e1).
    t = np.linspace(0.0, 1.0, 65)
    e = (e1 / span)[:, None] * (e0 * span / e1)[:, None] ** t
    straddle = np.maximum(count(l_small[:, None], e), count(l_large[:, None], e * span)).min(axis=1)
    straddle = np.where(e1 / span <= e0, straddle, np.inf)
    return np.minimum(np.minimum(plateau, band), straddle)
