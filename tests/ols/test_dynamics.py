"""The batched engine against independent references: closed form (GD) and a plain full-H loop (BNGD)."""

import numpy as np
import pytest
import torch

from bnlab import BnlabError
from bnlab.ols import Problem, bngd, gd, initial_weights, theory

from .reference import bngd_loop, gd_closed_form


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gd_matches_closed_form_over_1000_steps(seed):
    p = Problem.from_spectrum(8, 30.0, "linear", seed=seed)
    eps = np.array([0.001, 0.01, 0.04, 0.06])  # all below 2/lambda_max = 0.0667
    w0 = initial_weights(p.d, [seed, seed + 10, seed + 20, seed + 30])
    traj = gd(p, eps, 1000, w0=w0, record_every=250)
    for i, e in enumerate(eps):
        for t, k in enumerate(traj.steps):
            v_k, _ = gd_closed_form(p.H, p.g, w0[i], e, int(k))
            gap = v_k @ p.H @ v_k / 2
            assert traj.excess_loss[t, i] == pytest.approx(gap, rel=1e-10, abs=1e-300)
        np.testing.assert_allclose(traj.w_final[i], gd_closed_form(p.H, p.g, w0[i], e, 1000)[1], rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bngd_matches_full_matrix_loop_over_1000_steps(seed):
    rng = np.random.default_rng(seed)
    p = Problem.from_spectrum(6, 20.0, "log", seed=seed, noise=0.1)
    eps = np.array([0.01, 0.3, 5.0, 200.0])
    eps_a = np.array([1.0, 0.5, 0.1, 1.0])
    a0 = rng.uniform(0.5, 2.0, 4)
    w0 = rng.standard_normal((4, p.d))
    traj = bngd(p, eps, 1000, eps_a=eps_a, w0=w0, a0=a0, record_every=1, compile=False)
    for i in range(4):
        gaps, As, norms, w_final = bngd_loop(p.H, p.g, p.c, w0[i], a0[i], eps[i], eps_a[i], 1000)
        np.testing.assert_allclose(traj.a[:, i], As, rtol=1e-10)
        np.testing.assert_allclose(traj.w_norm[:, i], norms, rtol=1e-10)
        np.testing.assert_allclose(traj.w_final[i], w_final, rtol=1e-10, atol=1e-10 * np.linalg.norm(w_final))
        # Gaps are compared where the loop's own cancellation error (c - ... ~ 1e-16 c) does not dominate.
        ok = gaps > 1e-6 * p.c
        np.testing.assert_allclose(traj.excess_loss[ok, i], gaps[ok], rtol=1e-9)
        assert np.all(traj.excess_loss[:, i] >= 0)


def test_recorded_steps_and_frame():
    p = Problem.from_spectrum(4, 10.0, seed=0)
    traj = bngd(p, [0.1, 1.0], 25, record_every=10)
    np.testing.assert_array_equal(traj.steps, [0, 10, 20, 25])
    frame = traj.to_frame()
    assert len(frame) == 8
    assert {"run", "step", "eps", "eps_a", "excess_loss", "a", "w_norm", "w_norm_H", "eff_step"} <= set(frame.columns)
    np.testing.assert_allclose(frame.eff_step, frame.eps * frame.a**2 / frame.w_norm_H**2)


def test_gd_divergence_threshold_within_one_percent():
    p = Problem.from_spectrum(10, 100.0, "log", seed=4)
    eps = np.geomspace(1e-3, 1.0, 2001)
    traj = gd(p, eps, 2000, record_every=2000)
    fails = traj.diverged | (traj.excess_loss[-1] >= traj.excess_loss[0])
    measured = eps[np.argmax(fails)]
    assert measured == pytest.approx(theory.gd_threshold(p), rel=0.01)
    assert not fails[: np.argmax(fails)].any() and fails[np.argmax(fails) :].all()


def test_diverged_runs_are_frozen_finite_and_do_not_touch_the_others():
    p = Problem.from_spectrum(10, 100.0, "log", seed=1)
    good = np.array([0.001, 0.01, 0.019])
    wild = np.array([0.03, 10.0, 1e8])
    mixed = gd(p, np.r_[good, wild], 3000, record_every=100)
    alone = gd(p, good, 3000, record_every=100)
    np.testing.assert_allclose(mixed.excess_loss[:, :3], alone.excess_loss, rtol=1e-13)  # BLAS order only
    assert (mixed.diverged_at[3:] > 0).all() and (mixed.diverged_at[:3] == -1).all()
    assert np.isfinite(mixed.w_final).all() and np.isfinite(mixed.excess_loss).all()
    # BNGD with eps_a > 2 blows up through a; it is frozen and flagged, the others are untouched.
    b_mixed = bngd(p, 1.0, 2000, eps_a=[1.0, 0.5, 2.5], record_every=100)
    b_alone = bngd(p, 1.0, 2000, eps_a=[1.0, 0.5], record_every=100)
    np.testing.assert_allclose(b_mixed.excess_loss[:, :2], b_alone.excess_loss, rtol=1e-12)
    assert b_mixed.diverged.tolist() == [False, False, True]
    assert np.isfinite(b_mixed.w_final).all() and np.isfinite(b_mixed.a_final).all()


def test_bngd_converges_for_eps_from_1e_minus_3_to_1e6():
    p = Problem.from_spectrum(10, 100.0, "log", seed=0)
    eps = np.geomspace(1e-3, 1e6, 37)
    traj = bngd(p, eps, 20000, record_every=500)
    rel = traj.excess_loss / traj.excess_loss[0]
    assert not traj.diverged.any()
    # Every run still shrinks its gap over the second half, unless it has already reached round-off ...
    shrinking = np.all(np.diff(rel[len(rel) // 2 :], axis=0) < 0, axis=0) | (rel[-1] < 1e-25)
    assert shrinking.all()
    assert np.all(rel[-1] < 0.2)
    # ... and up to eps = 1e3 it is converged; beyond, progress slows like 1/eps (F7) but never reverses.
    assert np.all(rel[-1][eps <= 1e3] < 1e-6)
    assert np.all(rel[-1][(eps >= 1e-2) & (eps <= 1e2)] < 1e-25)


def test_measured_rate_matches_predicted_rate_within_one_percent():
    p = Problem.from_spectrum(10, 100.0, "log", seed=0)
    eps = np.array([0.01, 0.1, 0.3, 1.0, 3.0, 30.0, 100.0])
    traj = bngd(p, eps, 6000, record_every=1)
    measured = theory.measured_rate(traj.steps, traj.excess_loss)
    predicted = theory.bngd_rate(p, traj.eff_step[-1]) ** 2
    close = np.abs(measured / predicted - 1) < 0.01
    assert close.sum() >= 5, (measured, predicted)
    # GD's measured rate is its closed-form rate squared.
    g = gd(p, [0.005, 0.0198], 3000)
    np.testing.assert_allclose(
        theory.measured_rate(g.steps, g.excess_loss), theory.gd_rate(p, [0.005, 0.0198]) ** 2, rtol=1e-3
    )


def test_compiled_steps_equal_eager_steps():
    p = Problem.from_spectrum(16, 50.0, seed=5)
    eps = np.geomspace(1e-2, 1e4, 64)
    eager = bngd(p, eps, 40, eps_a=[0.5] * 64, record_every=20, compile=False)
    fused = bngd(p, eps, 40, eps_a=[0.5] * 64, record_every=20, compile=True)
    np.testing.assert_allclose(fused.excess_loss, eager.excess_loss, rtol=1e-9)
    np.testing.assert_allclose(fused.w_final, eager.w_final, rtol=1e-9)


def test_float32_is_supported_and_close():
    p = Problem.from_spectrum(8, 10.0, seed=2)
    lo = bngd(p, [0.1, 1.0], 200, record_every=200, dtype=torch.float32)
    hi = bngd(p, [0.1, 1.0], 200, record_every=200)
    np.testing.assert_allclose(lo.a[-1], hi.a[-1], rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": -0.1}, "eps must be > 0"),
        ({"eps": [0.1, np.nan]}, "eps must be > 0"),
        ({"eps": 0.1, "eps_a": 0.0}, "eps_a must be > 0"),
        ({"eps": [0.1, 0.2], "eps_a": [1.0, 1.0, 1.0]}, "incompatible lengths"),
        ({"eps": 0.1, "w0": np.ones(3)}, "w0 must have shape"),
        ({"eps": 0.1, "w0": np.zeros(4)}, "non-zero"),
        ({"eps": 0.1, "steps": -1}, "steps"),
        ({"eps": 0.1, "record_every": 0}, "record_every"),
        ({"eps": 0.1, "device": "cuda"} if not torch.cuda.is_available() else {"eps": 0.1, "a0": np.nan}, "cuda|a0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    p = Problem.from_spectrum(4, 10.0, seed=0)
    kwargs = {"steps": 5, **kwargs}
    with pytest.raises(BnlabError, match=message):
        bngd(p, **kwargs)


def test_gd_flushes_coordinates_below_the_floor_without_changing_the_gap():
    """Fast modes of GD decay to subnormal numbers while the slow ones hold the gap up (kernels.gd_flush sets
    them to zero: 24x faster on kappa = 1e4); the gap still matches its closed form, on both engines."""
    p = Problem.from_spectrum(20, kappa=1e4, spectrum="log", seed=1, rotate=False)
    eps = np.array([0.1, 0.5, 0.95]) * theory.gd_threshold(p)
    steps = 5000  # (1 - 0.1 * 2 / 1.0)^5000 on the top mode: ~1e-485, far below the smallest subnormal
    v0 = initial_weights(p.d, [3])[0] - p.u_eig  # H is diagonal: its eigenbasis is the feature basis
    k = np.arange(0, steps + 1, 500)[:, None, None]
    closed = 0.5 * np.sum(p.eigvals * v0**2 * (1 - eps[:, None] * p.eigvals) ** (2 * k), axis=-1)  # (T, B)
    for compile_ in ("auto", False):
        traj = gd(p, eps, steps, seed=3, record_every=500, compile=compile_)
        np.testing.assert_allclose(traj.excess_loss, closed, rtol=1e-9)
