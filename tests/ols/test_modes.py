"""The modal decomposition of BNGD's loss gap against brute force, and the rate of the modes present."""

import numpy as np
import pytest

from bnlab.ols import Problem, bngd, initial_weights, theory
from bnlab.ols.modes import bngd_checkpoints, gd_modal_gap, modal_forecast, modal_gap, modal_rate

FAMILIES = [
    {"spectrum": "linear", "kappa": 30.0},
    {"spectrum": "log", "kappa": 1e3, "u_law": "student-t"},
    {"spectrum": "marchenko-pastur", "aspect": 3.0, "u_law": "rademacher"},
    {"spectrum": "spiked", "rho": 0.3, "spikes": 2},
    {"spectrum": "log", "kappa": 100.0, "u_law": "sparse", "sparsity": 0.3, "rotate": False},
]


@pytest.mark.parametrize("family", FAMILIES)
def test_parts_sum_to_the_gap_and_modes_are_h_star_eigenvalues(family):
    p = Problem.from_spectrum(12, seed=4, noise=0.2, **family)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, p.d)) + 3.0 * rng.random((6, 1)) * p.u  # from far off to close to u
    a = rng.standard_normal(6)
    modal = modal_gap(p, a, w)
    brute = p.bn_loss(a, w) - p.j_star  # J(a, w) - J* straight from the moments
    np.testing.assert_allclose(modal.gap, brute, rtol=1e-9)
    np.testing.assert_allclose(modal.mu, theory.effective_eigvals(p), rtol=1e-9, atol=1e-12 * p.lambda_max)
    assert np.all(modal.modes >= 0) and np.all(modal.along_u >= 0)


def test_the_part_along_u_is_second_order_in_the_angle():
    p = Problem.from_spectrum(8, 50.0, "log", seed=1)
    delta = np.random.default_rng(2).standard_normal(p.d)
    parts = [modal_gap(p, np.sqrt(p.u_norm_H2), p.u + t * delta) for t in (1e-2, 1e-3)]
    # The modes carry the gap to first order (gap ~ t^2); the part along u is O(t^4), 10^4 times smaller here.
    assert parts[0].modes.sum() / parts[1].modes.sum() == pytest.approx(100, rel=0.05)
    assert parts[0].along_u / parts[1].along_u == pytest.approx(1e4, rel=0.1)


def test_each_mode_contracts_at_its_own_linearised_rate():
    """Started near the optimum (w = u + delta, a = a*), every mode's part contracts by (1 - eps_hat mu_j)^2."""
    p = Problem.from_spectrum(10, 100.0, "log", seed=2)
    delta = 1e-4 * np.random.default_rng(1).standard_normal(p.d)
    eff = np.array([0.004, 0.012, 0.0195])  # up to just under the edge 2 / lambda*_max
    w0 = p.u + delta
    eps = eff * (w0 @ p.H @ w0) / p.u_norm_H2  # eps = eps_hat ||w||_H^2 / a^2 with a = a*
    a, w = bngd_checkpoints(p, eps, [0, 40], w0=w0, a0=np.sqrt(p.u_norm_H2))
    before, after = modal_gap(p, a[0], w[0]), modal_gap(p, a[1], w[1])
    # Linear only above the second-order floor: a mode the map has emptied is refilled by the square of the
    # others (its part then ~ gap^2 / u^T H u, contracting at the square of their rate).
    live = np.minimum(before.modes, after.modes) > 1e3 * before.gap[:, None] ** 2 / p.u_norm_H2
    measured = (after.modes / before.modes) ** (1 / 40)
    predicted = (1 - eff[:, None] * before.mu) ** 2
    np.testing.assert_allclose(measured[live], predicted[live], rtol=1e-3)
    assert live.sum() >= 12  # of 27: the fastest modes reach the floor within the 40 steps


def test_with_eps_a_0p1_the_scale_part_sets_the_rate():
    """SPEC 2b: with eps_a = 0.1 the tail contracts like (1 - eps_a)^2 = 0.81 where rho*^2 is smaller."""
    p = Problem.from_spectrum(10, 3.0, "log", seed=0)
    eps = np.array([0.5, 1.0, 3.0])
    traj = bngd(p, eps, 400, eps_a=0.1, seed=5)
    measured = theory.measured_rate(traj.steps, traj.excess_loss, floor=1e-24)
    rho_star2 = theory.bngd_rate(p, traj.eff_step[-1]) ** 2
    assert np.all(rho_star2 < 0.79)  # the modes of H* alone would predict faster convergence
    np.testing.assert_allclose(measured, 0.81, rtol=1e-3)
    a, w = bngd_checkpoints(p, eps, [60], eps_a=0.1, seed=5)
    predicted = modal_rate(modal_gap(p, a[0], w[0]), traj.eff_step[-1], 0.1, horizon=200)
    np.testing.assert_array_equal(predicted.mode, -1)
    np.testing.assert_allclose(predicted.rate, measured, rtol=1e-3)


def test_competing_modes_the_forecast_fit_matches_the_measured_rate():
    """Close eigenvalues of H* (Marchenko-Pastur, d = 10): the slowest mode holds only part of the gap over the
    fitted stretch, the measured rate is faster than rho*^2, and fitting the modal forecast reproduces it."""
    p = Problem.from_spectrum(10, spectrum="marchenko-pastur", seed=1)
    eps = np.array([0.01, 0.1])
    traj = bngd(p, eps, 12000, seed=1001, record_every=5)
    measured = theory.measured_rate(traj.steps, traj.excess_loss, floor=1e-24)
    rho_star2 = theory.bngd_rate(p, traj.eff_step[-1]) ** 2
    assert np.all(np.abs(np.log(measured) / np.log(rho_star2) - 1) > 0.01)
    start = 200  # past the transient: eps_hat has settled to 3%
    a, w = bngd_checkpoints(p, eps, [start], seed=1001)
    modal = modal_gap(p, a[0], w[0])
    offsets = np.arange(0, 12001 - start, 5)
    forecast = modal_forecast(modal, traj.eff_step[-1], 1.0, offsets)  # (2, T)
    gap = np.concatenate([traj.excess_loss[: start // 5], forecast.T], axis=0)
    predicted = theory.measured_rate(traj.steps, gap, floor=1e-24)
    np.testing.assert_allclose(np.log(predicted), np.log(measured), rtol=1e-2)


def test_checkpoints_resume_the_trajectory():
    p = Problem.from_spectrum(6, 20.0, seed=0)
    a, w = bngd_checkpoints(p, [0.3, 3.0], [0, 25, 60], seed=2, eps_a=0.5)
    ref = bngd(p, [0.3, 3.0], 60, eps_a=0.5, seed=2, record_every=1)
    np.testing.assert_allclose(a[1], ref.a[25], rtol=1e-12)
    np.testing.assert_allclose(a[2], ref.a_final, rtol=1e-12)
    np.testing.assert_allclose(w[2], ref.w_final, rtol=1e-10)
    np.testing.assert_allclose(w[0], initial_weights(6, [2, 2]), rtol=1e-14)  # rotated there and back


def test_gd_rate_is_set_by_the_slowest_populated_mode():
    """Diagonal H, sparse u, w0 agreeing with u off its support: w0 - u has no part on the slow modes, so GD's
    tail contracts at max over the populated modes of (1 - eps lambda_i)^2, not at rho(eps)^2 (a brute-force
    loop of GD in float64 beside the modal prediction)."""
    p = Problem.from_spectrum(30, kappa=50.0, spectrum="linear", u_law="sparse", sparsity=0.3, rotate=False, seed=0)
    populated = p.u_eig != 0
    assert 0 < populated.sum() < p.d and not populated[-1]  # the lambda_min mode is empty
    w0 = np.zeros(p.d)  # w0 - u = -u: only u's support is populated
    eps = np.array([0.1, 0.3, 0.5]) * theory.gd_threshold(p)  # eps lambda <= 1: the smallest lambda is slowest
    steps = 400
    v, gaps = np.tile(w0 - p.u, (len(eps), 1)), []
    for _ in range(steps + 1):  # brute force: w <- w - eps (H w - g), in the original (here eigen) coordinates
        gaps.append(0.5 * np.einsum("bi,ij,bj->b", v, p.H, v))
        v = v - eps[:, None] * (v @ p.H)
    measured = theory.measured_rate(np.arange(steps + 1), np.array(gaps), floor=1e-24)
    split = gd_modal_gap(p, np.tile(w0, (len(eps), 1)))
    slowest = modal_rate(split, eps, 1.0, horizon=steps // 2)
    expected = np.max(np.where(populated, (1 - eps[:, None] * p.eigvals) ** 2, 0), axis=1)
    np.testing.assert_allclose(slowest.rate, expected, rtol=1e-12)
    np.testing.assert_allclose(measured, expected, rtol=1e-6)
    assert np.all(expected < theory.gd_rate(p, eps) ** 2 - 1e-3)  # rho(eps)^2 would be wrong here
    forecast = modal_forecast(split, eps, 1.0, np.arange(steps + 1))
    np.testing.assert_allclose(forecast.T, np.array(gaps), rtol=1e-9, atol=1e-300)  # GD is linear: exact
