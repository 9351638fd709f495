"""The loss gap of BNGD split over the modes of the effective Hessian, and the rate of the modes present.

Near the optimum write ``w`` along ``u + delta`` with ``delta`` H-orthogonal to u. In the coordinates
``y = H^{1/2} delta`` (Euclidean there = the H inner product) one step of BNGD is, to first order,
``y <- (I - eps_hat P H P) y`` with ``P = I - v v^T``, ``v = H^{1/2} u / a*``, ``a* = ||u||_H``: a symmetric map
(no non-normal effects), whose non-zero eigenvalues are those of ``H* = H^{1/2} P H^{1/2}`` (``AB`` and ``BA``
share them). So the direction part of the gap, ``||e||_H^2 / 2`` with ``e = u - (w^T g / ||w||_H^2) w``
(``e ~ -delta``), splits exactly into ``sum_j (psi_j^T H^{1/2} e)^2 / 2`` over the orthonormal eigenvectors
``psi_j`` of ``P H P``: one per non-zero eigenvalue ``mu_j`` of H* (the modes; ``psi_j`` is ``H^{-1/2}`` times H*'s
eigenvector), plus ``v`` itself, a part of second order in the angle (e is H-orthogonal to w, not to u). The
rest of the gap is the scale's ``(a - p)^2 / 2`` with ``p = w^T g / ||w||_H``.

Mode j contracts the gap by ``(1 - eps_hat mu_j)^2`` per step and the scale part by ``(1 - eps_a)^2``, so
``rho*(eps_hat)^2`` (the extreme modes) is the asymptote in exact arithmetic; a measured tail contracts at the
rate of the slowest mode still populated above round-off (the top mode can be wiped out in the transient,
when ``eps_hat`` passes ``1 / lambda*_max``), and with ``eps_a < 1`` the scale part can be that slowest one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlab.errors import BnlabError
from bnlab.ols.dynamics import bngd
from bnlab.ols.problem import Problem

# The decomposition diagonalises P H P densely (O(d^3) once per problem).
MAX_D = 2048


@dataclass(frozen=True)
class ModalGap:
    """The loss gap ``J - J*`` of a batch of BNGD states, split into parts that sum to it exactly.

    ``mu`` (d - 1,): H*'s non-zero eigenvalues, descending; ``modes`` (..., d - 1): each mode's part;
    ``along_u`` (...): the second-order part along u; ``a_part`` (...): ``(a - p)^2 / 2``.
    """

    mu: np.ndarray
    modes: np.ndarray
    along_u: np.ndarray
    a_part: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        return self.a_part + self.along_u + self.modes.sum(axis=-1)


def mode_basis(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(mu descending (d-1,), psi (d, d))`` in H's eigenbasis: the columns of ``psi`` are the orthonormal
    eigenvectors of ``P diag(lambda) P``, the last one ``v`` (eigenvalue 0)."""
    if problem.d > MAX_D:
        raise BnlabError(f"the modal decomposition is dense: d must be <= {MAX_D}, got {problem.d}")
    lam = problem.eigvals
    v = np.sqrt(lam) * problem.u_eig / np.sqrt(problem.u_norm_H2)
    P = np.eye(problem.d) - np.outer(v, v)
    vals, vecs = np.linalg.eigh(P @ np.diag(lam) @ P)
    # Ascending: the first is v's 0 (every other eigenvalue is at least lambda_min > 0, by interlacing).
    return vals[:0:-1].copy(), np.concatenate([vecs[:, :0:-1], vecs[:, :1]], axis=1)


def modal_gap(problem: Problem, a, w, basis: tuple[np.ndarray, np.ndarray] | None = None) -> ModalGap:
    """Split the gap of states ``(a (...), w (..., d))`` (w in the original coordinates) over H*'s modes."""
    mu, psi = mode_basis(problem) if basis is None else basis
    lam, g, u = problem.eigvals, problem.g_eig, problem.u_eig
    w = problem.to_eig(w)
    whw = np.einsum("...i,i,...i->...", w, lam, w)
    wg = w @ g
    e = u - (wg / whw)[..., None] * w
    coeff = (np.sqrt(lam) * e) @ psi
    p = wg / np.sqrt(whw)
    return ModalGap(
        mu=mu,
        modes=coeff[..., :-1] ** 2 / 2,
        along_u=coeff[..., -1] ** 2 / 2,
        a_part=(np.asarray(a, dtype=np.float64) - p) ** 2 / 2,
    )


def mode_rates(mu: np.ndarray, eff_step, eps_a) -> tuple[np.ndarray, np.ndarray]:
    """Per-step contraction of each mode's part, ``(1 - eps_hat mu_j)^2`` (..., d - 1), and of the scale
    part, ``(1 - eps_a)^2`` (...)."""
    eff_step = np.asarray(eff_step, dtype=np.float64)
    return (1 - eff_step[..., None] * mu) ** 2, (1 - np.asarray(eps_a, dtype=np.float64)) ** 2


@dataclass(frozen=True)
class ModalRate:
    """The predicted tail rate of a batch of runs: the slowest part still populated ``horizon`` steps after
    the checkpoint (``mode`` = index into ``mu``, -1 for the scale part), its rate, its share of the gap then
    and its ``mu`` (NaN for the scale part)."""

    rate: np.ndarray
    mode: np.ndarray
    share: np.ndarray
    mu: np.ndarray


def modal_rate(modal: ModalGap, eff_step, eps_a, horizon=0, floor: float = 0.01) -> ModalRate:
    """The largest contraction over the parts that hold at least ``floor`` of the gap ``horizon`` steps on.

    Each part is carried forward at its own rate, so a slow part that holds a sliver of the gap at the
    checkpoint (the top mode, wiped out to round-off in the transient, or the scale part) counts if it has
    taken over by then, and one that stays at round-off level does not. The part along u is second order
    and left out; so is the scale part for ``eps_a = 1`` in effect (its rate is 0: ``a_{k+1} = p_k``).
    """
    rates, a_rate = mode_rates(modal.mu, eff_step, eps_a)
    a_rate = np.broadcast_to(a_rate, modal.a_part.shape)
    all_rates = np.concatenate([rates, a_rate[..., None]], axis=-1)
    parts = np.concatenate([modal.modes, modal.a_part[..., None]], axis=-1)
    horizon = np.asarray(horizon, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore"):
        log_later = np.log(parts) + horizon * np.log(all_rates)  # in logs: no underflow over long horizons
    share = np.exp(log_later - np.max(log_later, axis=-1, keepdims=True))
    share = share / share.sum(axis=-1, keepdims=True)
    masked = np.where(share >= floor, all_rates, -np.inf)
    best = np.argmax(masked, axis=-1)[..., None]
    index = np.where(best[..., 0] == len(modal.mu), -1, best[..., 0])
    return ModalRate(
        rate=np.take_along_axis(masked, best, axis=-1)[..., 0],
        mode=index,
        share=np.take_along_axis(share, best, axis=-1)[..., 0],
        mu=np.where(index >= 0, modal.mu[np.clip(index, 0, len(modal.mu) - 1)], np.nan),
    )


def modal_forecast(modal: ModalGap, eff_step, eps_a, offsets) -> np.ndarray:
    """The gap ``offsets`` steps after the checkpoint (..., T) if every part contracts at its own linearised
    rate: ``sum_j part_j (1 - eps_hat mu_j)^(2t) + (a - p)^2 / 2 (1 - eps_a)^(2t)`` (the second-order part
    along u left out). Fitting its logarithm as a measured gap is fitted predicts the measured rate where
    modes compete (close eigenvalues of H*, or eps_hat near the tie ``2 / (lambda*_max + lambda*_min)``)."""
    rates, a_rate = mode_rates(modal.mu, eff_step, eps_a)
    t = np.asarray(offsets, dtype=np.float64)  # (T,) for every run, or (..., T) per run
    shape = np.broadcast_shapes(rates.shape, modal.modes.shape)
    rates, parts = np.broadcast_to(rates, shape), np.broadcast_to(modal.modes, shape)
    batch = shape[:-1]
    times = np.broadcast_to(t, (*batch, t.shape[-1]))
    flat_r, flat_p = rates.reshape(-1, rates.shape[-1]), parts.reshape(-1, rates.shape[-1])
    flat_t = times.reshape(-1, t.shape[-1])
    # One run at a time, a (d, T) power table and a matrix-vector product: the whole (..., d, T) table at once
    # (450 MB at 14 runs x d = 1000 x 4000 records) made this 10x slower than the dynamics it explains.
    # r^t as exp(t log r) (numpy's vectorised exp, ~30x faster than its pow here); a rate of 0 is taken as
    # 1e-300, whose powers t >= 1 are 0 to the type's resolution.
    logs = np.log(np.maximum(flat_r, 1e-300))
    modes_later = np.stack([p @ np.exp(lr[:, None] * tn) for lr, p, tn in zip(logs, flat_p, flat_t, strict=True)])
    modes_later = modes_later.reshape(*batch, t.shape[-1])
    return modes_later + modal.a_part[..., None] * np.asarray(a_rate)[..., None] ** t


def gd_modal_gap(problem: Problem, w) -> ModalGap:
    """GD's loss gap of states ``w (..., d)`` (original coordinates) split over H's own modes, as a
    :class:`ModalGap` whose ``mu`` is lambda: GD is linear, ``v = Q^T (w - u)`` moves as
    ``v_i <- (1 - eps lambda_i) v_i``, and the gap is exactly ``sum_i lambda_i v_i^2 / 2``, mode i contracting
    by ``(1 - eps lambda_i)^2`` per step. So :func:`modal_rate` and :func:`modal_forecast` (with ``eff_step =
    eps``; the scale part is empty) give GD's rate from the modes populated in ``w - u``: a coordinate that is
    zero (a sparse ``w0 - u`` in H's eigenbasis) or below round-off never sets the tail, and close eigenvalues
    near the slowest one compete over a finite stretch.
    """
    v = problem.to_eig(w) - problem.u_eig
    zeros = np.zeros(v.shape[:-1])
    return ModalGap(mu=problem.eigvals, modes=problem.eigvals * v**2 / 2, along_u=zeros, a_part=zeros)


def bngd_checkpoints(problem: Problem, eps, at_steps, **bngd_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The BNGD states ``(a (K, B), w (K, B, d))`` at the steps ``at_steps`` (ascending), by running the batch
    segment by segment (each segment restarts from the previous one's final state)."""
    at = np.asarray(at_steps, dtype=int)
    if at.ndim != 1 or np.any(np.diff(at) < 0) or np.any(at < 0):
        raise BnlabError("at_steps must be a 1-D ascending list of step counts >= 0")
    w0 = bngd_kwargs.pop("w0", None)
    a0 = bngd_kwargs.pop("a0", 1.0)
    seed = bngd_kwargs.pop("seed", 0)
    w0_norm = bngd_kwargs.pop("w0_norm", "gaussian")
    bngd_kwargs.pop("record_every", None)
    traj = bngd(problem, eps, 0, w0=w0, a0=a0, seed=seed, w0_norm=w0_norm, **bngd_kwargs)
    w, a = traj.w_final, traj.a_final
    states_a, states_w, done = [], [], 0
    for k in at:
        if k > done:
            traj = bngd(problem, eps, int(k - done), w0=w, a0=a, record_every=int(k - done), **bngd_kwargs)
            w, a, done = traj.w_final, traj.a_final, int(k)
        states_a.append(a)
        states_w.append(w)
    return np.stack(states_a), np.stack(states_w)
