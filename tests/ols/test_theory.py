"""Closed forms against brute-force numerics."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnlab.ols.theory as theory
from bnlab import BnlabError
from bnlab.ols import Problem, bngd, gd


def test_gd_closed_forms_against_brute_force():
    p = Problem.from_spectrum(7, 40.0, "linear", seed=1)
    eps_grid = np.linspace(1e-4, 2.5 / p.lambda_max, 20001)
    # Brute force: spectral radius of I - eps H for each eps.
    radius = np.array([np.max(np.abs(np.linalg.eigvalsh(np.eye(7) - e * p.H))) for e in eps_grid[::100]])
    np.testing.assert_allclose(theory.gd_rate(p, eps_grid[::100]), radius, rtol=1e-12)
    rates = theory.gd_rate(p, eps_grid)
    assert eps_grid[np.argmin(rates)] == pytest.approx(theory.gd_optimal_eps(p), rel=1e-3)
    assert rates.min() == pytest.approx(theory.gd_optimal_rate(p), rel=1e-5)  # grid resolution
    assert eps_grid[np.argmax(rates >= 1)] == pytest.approx(theory.gd_threshold(p), rel=1e-4)


@given(d=st.integers(2, 12), kappa=st.floats(1.5, 1e4), seed=st.integers(0, 10_000), log=st.booleans())
def test_effective_spectrum_interlaces_and_matches_dense_eigensolver(d, kappa, seed, log):
    """F5: H* = H - H u u^T H / (u^T H u) has u in its kernel; its other eigenvalues interlace with H's."""
    p = Problem.from_spectrum(d, kappa, "log" if log else "linear", seed=seed)
    h_star = theory.effective_hessian(p)
    brute = np.sort(np.linalg.eigvalsh(h_star))[::-1]
    scale = p.lambda_max
    assert abs(brute[-1]) < 1e-9 * scale  # the kernel: H* u = 0
    np.testing.assert_allclose(h_star @ p.u, 0.0, atol=1e-9 * scale * np.linalg.norm(p.u))
    mu = theory.effective_eigvals(p)
    np.testing.assert_allclose(mu, brute[:-1], rtol=1e-8, atol=1e-10 * scale)
    lam = p.eigvals
    assert np.all(mu <= lam[:-1] * (1 + 1e-10)) and np.all(mu >= lam[1:] * (1 - 1e-10))
    assert theory.kappa_star(p) <= p.kappa * (1 + 1e-10)


def test_secular_path_matches_dense_path():
    p = Problem.from_spectrum(300, 1000.0, "log", seed=7)
    assert p.d > theory._DENSE_MAX_D  # the compiled secular solver
    lam, z = p.eigvals, p.eigvals * p.u_eig
    dense = np.linalg.eigvalsh(np.diag(lam) - np.outer(z, z) / p.u_norm_H2)[::-1][:-1]
    np.testing.assert_allclose(theory.effective_eigvals(p), dense, rtol=1e-10)
    assert theory.effective_extremes(p) == pytest.approx((dense[0], dense[-1]), rel=1e-10)


@pytest.mark.parametrize("spectrum", ["linear", "log", "marchenko-pastur", "spiked"])
@pytest.mark.parametrize("u_law", ["gaussian", "sparse"])
def test_extremes_from_the_secular_equation_match_a_dense_solver_at_every_d(spectrum, u_law):
    """kappa* and the window law take (lambda*_max, lambda*_min) from the secular equation at every d (O(d));
    brute force: the dense eigenvalues of H* in the original coordinates."""
    for d in (2, 3, 10, 60):
        for rotate in (True, False):
            p = Problem.from_spectrum(d, 30.0, spectrum, seed=d, u_law=u_law, sparsity=0.3, rotate=rotate)
            brute = np.sort(np.linalg.eigvalsh(theory.effective_hessian(p)))[::-1][:-1]
            hi, lo = theory.effective_extremes(p)
            assert hi == pytest.approx(brute[0], rel=1e-9)
            assert lo == pytest.approx(brute[-1], rel=1e-8)


def test_reference_point_of_the_spec_is_in_range():
    # SPEC: d = 10, kappa = 100, log spectrum: kappa* about 75 there (our seeds differ, so a range).
    ks = [theory.kappa_star(Problem.from_spectrum(10, 100.0, "log", seed=s)) for s in range(20)]
    assert 40 < np.median(ks) < 100
    assert all(k <= 100 for k in ks)


def test_predicted_bngd_rate_is_the_loss_contraction_of_gd_on_h_star():
    """rho*(eps_hat) equals the spectral radius of I - eps_hat H* restricted to u's H-orthogonal complement."""
    p = Problem.from_spectrum(6, 30.0, seed=3)
    mu = theory.effective_eigvals(p)
    for eff in (0.001, 0.02, 0.05):
        assert theory.bngd_rate(p, eff) == pytest.approx(np.max(np.abs(1 - eff * mu)), rel=1e-12)


def test_steps_to_tolerance_and_measured_rate_on_synthetic_data():
    steps = np.arange(200)
    gap = np.stack([0.9**steps, np.r_[np.ones(50), 0.5 ** np.arange(150)]], axis=1)
    np.testing.assert_allclose(theory.steps_to_tolerance(steps, gap, 1e-3), [66, 60])
    np.testing.assert_allclose(theory.measured_rate(steps, gap), [0.9, 0.5], rtol=1e-10)
    assert np.isnan(theory.measured_rate(steps, np.ones(200)))  # no convergence, no rate


def test_measured_rate_stops_above_a_round_off_floor_it_lies_on_before_the_fit_floor():
    # A gap contracting by 0.998 per step onto a jittering floor at 6e-24 of its start (what a spiked d = 1000 run
    # showed), fitted to 1e-24: the fit must end above the floor, not read the flat tail as a rate of 1.
    steps = np.arange(60_000)
    jitter = 1 + 0.03 * (steps % 2)
    floored = np.maximum(0.998**steps, 6e-24 * jitter)
    decaying = 0.9995**steps  # a steady fall to 1e-13 at the end: no floor, fitted as before
    gap = np.stack([floored, decaying], axis=1)
    assert theory.roundoff_floor(floored) == pytest.approx(6e-24)
    assert theory.roundoff_floor(decaying) == 0.0
    np.testing.assert_allclose(theory.measured_rate(steps, gap, floor=1e-24), [0.998, 0.9995], rtol=1e-9)


# -- property tests for SPEC section 2 ---------------------------------------------------------------------
problems = st.builds(
    Problem.from_spectrum,
    d=st.integers(2, 10),
    kappa=st.floats(1.0, 1e3),
    spacing=st.sampled_from(["linear", "log"]),
    seed=st.integers(0, 10_000),
    noise=st.floats(0.0, 1.0),
)


@given(problem=problems, log_eps=st.floats(-3, 6), eps_a=st.floats(0.05, 1.0), seed=st.integers(0, 1000))
def test_f3_weight_norm_grows_by_the_squared_step(problem, log_eps, eps_a, seed):
    """F3: grad_w J is orthogonal to w, so ||w_{k+1}||^2 = ||w_k||^2 + ||w_{k+1} - w_k||^2 >= ||w_k||^2."""
    eps = 10.0**log_eps
    w0 = np.random.default_rng(seed).standard_normal(problem.d)
    one = bngd(problem, eps, 1, eps_a=eps_a, w0=w0)
    step = one.w_final[0] - w0
    assert one.w_norm[1, 0] ** 2 == pytest.approx(np.dot(w0, w0) + np.dot(step, step), rel=1e-10)
    many = bngd(problem, eps, 50, eps_a=eps_a, w0=w0)
    assert np.all(np.diff(many.w_norm[:, 0]) >= -1e-12 * many.w_norm[1:, 0])


@given(problem=problems, log_eps=st.floats(-3, 3), log_gamma=st.floats(-2, 2), seed=st.integers(0, 1000))
def test_f4_scaling_law_same_a_and_direction(problem, log_eps, log_gamma, seed):
    """F4: (eps, w0) and (gamma^2 eps, gamma w0) give the same a_k and the same direction of w_k."""
    eps, gamma = 10.0**log_eps, 10.0**log_gamma
    w0 = np.random.default_rng(seed).standard_normal(problem.d)
    base = bngd(problem, eps, 30, w0=w0, eps_a=0.7)
    scaled = bngd(problem, gamma**2 * eps, 30, w0=gamma * w0, eps_a=0.7)
    # Exact in exact arithmetic; the tolerance leaves room for round-off amplified by oscillating transients
    # (eps_hat above the stability edge at first), while a wrong law would differ at order one.
    np.testing.assert_allclose(scaled.a, base.a, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(scaled.w_norm, gamma * base.w_norm, rtol=1e-6)
    direction = base.w_final[0] / np.linalg.norm(base.w_final[0])
    np.testing.assert_allclose(scaled.w_final[0] / np.linalg.norm(scaled.w_final[0]), direction, atol=1e-6)
    np.testing.assert_allclose(scaled.excess_loss, base.excess_loss, rtol=1e-5, atol=1e-10 * base.excess_loss[0, 0])


def test_f4_gd_has_no_scaling_law():
    p = Problem.from_spectrum(5, 10.0, seed=0)
    w0 = np.random.default_rng(0).standard_normal(5)
    base = gd(p, 0.06, 100, w0=w0)
    scaled = gd(p, 0.06 * 4.0, 100, w0=2.0 * w0)
    assert not np.allclose(scaled.excess_loss, 4.0 * base.excess_loss, rtol=0.1)
    # 4x the step crosses 2/lambda_max = 0.2: the scaled run blows up while the base run converges.
    assert scaled.excess_loss[-1, 0] > 1e20 * scaled.excess_loss[0, 0]
    assert base.excess_loss[-1, 0] < 1e-5 * base.excess_loss[0, 0]


# -- kappa* beyond the dense path: deflation ------------------------------------------------------------
def test_secular_path_deflates_zero_coordinates_at_d_3000():
    """Diagonal H with a sparse u: u has exact zeros in H's eigenbasis. Those eigenvalues of H stay eigenvalues
    of H* and must leave the secular equation; the extremes and the whole spectrum match a dense solver."""
    p = Problem.from_spectrum(3000, 100.0, "linear", seed=5, u_law="sparse", sparsity=0.01, rotate=False)
    assert p.d > theory._DENSE_MAX_D and np.sum(p.u_eig == 0) >= 2900
    assert p.u_eig[0] == 0  # lambda_max itself is a deflated eigenvalue: the case that returned a pole
    lam, z = p.eigvals, p.eigvals * p.u_eig
    dense = np.linalg.eigvalsh(np.diag(lam) - np.outer(z, z) / p.u_norm_H2)[::-1][:-1]
    hi, lo = theory.effective_extremes(p)
    assert hi == pytest.approx(dense[0], rel=1e-12)
    assert lo == pytest.approx(dense[-1], rel=1e-10)
    assert theory.kappa_star(p) == pytest.approx(dense[0] / dense[-1], rel=1e-10)
    assert theory.bngd_stability_edge(p) == pytest.approx(2 / dense[0], rel=1e-12)
    np.testing.assert_allclose(theory.effective_eigvals(p), dense, rtol=1e-10, atol=1e-12 * p.lambda_max)


def test_secular_path_handles_repeated_eigenvalues(monkeypatch):
    """Spiked spectra repeat 1 - rho d - spikes times: the repeats deflate to one pole with the summed weight."""
    p = Problem.from_spectrum(40, spectrum="spiked", rho=0.4, spikes=3, seed=2)
    dense = theory.effective_eigvals(p)
    monkeypatch.setattr(theory, "_DENSE_MAX_D", 10)
    np.testing.assert_allclose(theory.effective_eigvals(p), dense, rtol=1e-10)
    assert theory.effective_extremes(p) == pytest.approx((dense[0], dense[-1]), rel=1e-10)


# -- the window law: its algebra (the measured comparison is in test_window_law.py) -----------------------
def test_window_law_edges_follow_the_effective_step_and_w0_only_shifts():
    p = Problem.from_spectrum(50, 20.0, "log", seed=3)
    w0 = np.random.default_rng(0).standard_normal(p.d)
    law = theory.window_law(p, w0, 1.0, 10.0)
    eh_opt = theory.bngd_optimal_eff_step(p)
    # At eps_lo with w at w0 and a at a*, aligned (||w||_H = ||w|| a*/||u||): eps_hat = eps_hat_opt.
    a_star, u_norm = np.sqrt(p.u_norm_H2), np.linalg.norm(p.u)
    eh = theory.effective_step_size(law.eps_lo, a_star, np.linalg.norm(w0) * a_star / u_norm)
    assert eh == pytest.approx(eh_opt, rel=1e-12)
    # At eps_hi the first step's growth alone (F3) brings it down to eps_hat_opt.
    w1 = bngd(p, law.eps_hi, 1, w0=w0, a0=1.0).w_final[0]
    grown = np.sqrt(np.sum(w1**2) - np.sum(w0**2))  # eps * ||grad_w J(a0, w0)||
    eh = theory.effective_step_size(law.eps_hi, a_star, grown * a_star / u_norm)
    assert eh == pytest.approx(eh_opt, rel=1e-9)
    # ||w0|| cancels from the width; the window moves by its square.
    scaled = theory.window_law(p, 7.0 * w0, 1.0, 10.0)
    assert scaled.width == pytest.approx(law.width, rel=1e-12)
    assert scaled.lower / law.lower == pytest.approx(49.0, rel=1e-12)
    # So with tol: what the flanks' start directions cost depends on directions only (w0's and the first step's).
    with_tol = [theory.window_law(p, k * w0, 1.0, 10.0, tol=1e-6, sustain=0.2) for k in (1.0, 7.0)]
    assert with_tol[1].width == pytest.approx(with_tol[0].width, rel=1e-9)
    assert with_tol[1].best_steps == pytest.approx(with_tol[0].best_steps, rel=1e-9)
    assert with_tol[1].upper / with_tol[0].upper == pytest.approx(49.0, rel=1e-9)
    # The flank factor tends to F from below as kappa* grows; with a batch of w0 the law is per run.
    assert 9.0 < law.flank < 10.0
    batch = theory.window_law(p, np.stack([w0, 2 * w0]), np.array([1.0, 3.0]), 10.0)
    assert batch.width.shape == (2,) and batch.width[0] == pytest.approx(law.width)
    # a0 multiplies the gradient: eps_hi moves by 1/a0^2, and so does the upper end while the window is wide.
    assert batch.eps_hi[1] / batch.eps_hi[0] == pytest.approx(4.0 / 9.0, rel=1e-12)
    assert batch.upper[1] / batch.upper[0] == pytest.approx(4.0 / 9.0, rel=1e-3)


def test_isotropic_width_approximates_the_law_in_high_dimension():
    for spectrum in ("linear", "log", "marchenko-pastur"):
        p = Problem.from_spectrum(3000, 10.0, spectrum, seed=1, rotate=False)  # secular path: fast
        w0 = np.random.default_rng(99).standard_normal(p.d)  # not the problem's seed: u would be w0
        law = theory.window_law(p, w0, 1.0, 10.0)
        iso = theory.window_width_isotropic(p, 1.0, 10.0)
        # Same formula up to the flank factor (log10 of ~1.09 per end at kappa* = 10) and O(d^-1/2) sampling.
        assert float(law.width) == pytest.approx(iso + 2 * np.log10(law.flank / 10.0), abs=0.1)


def test_window_law_rejects_bad_input_and_handles_a0_zero():
    p = Problem.from_spectrum(5, 10.0, seed=0)
    w0 = np.ones(5)
    with pytest.raises(BnlabError, match="factor"):
        theory.window_law(p, w0, 1.0, 1.0)
    with pytest.raises(BnlabError, match="tol"):
        theory.window_law(p, w0, 1.0, 10.0, tol=2.0)
    with pytest.raises(BnlabError, match="sustain"):
        theory.window_law(p, w0, 1.0, 10.0, tol=1e-6, sustain=-0.1)
    # a0 = 0: w stays put for one step, then a_1 = w0^T g / ||w0||_H plays a0's part.
    p0 = (w0 @ p.g) / np.sqrt(w0 @ p.H @ w0)
    assert theory.window_law(p, w0, 0.0).upper == pytest.approx(theory.window_law(p, w0, p0).upper)
