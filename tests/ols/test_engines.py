"""Every engine and recording mode against the eager torch reference (float64, 1e-12), frozen runs included."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.ols import Problem, bngd, dynamics, gd, kernels

BNGD_FIELDS = ("excess_loss", "a", "w_norm", "w_norm_H", "eff_step", "w_final", "a_final")


def assert_same(fused, eager, fields, rtol=1e-12):
    np.testing.assert_array_equal(fused.steps, eager.steps)
    np.testing.assert_array_equal(fused.diverged_at, eager.diverged_at)
    for name in fields:
        actual, desired = getattr(fused, name), getattr(eager, name)
        if name == "w_final":  # a vector: relative to its norm (a tiny coordinate carries the sums' round-off)
            scale = np.linalg.norm(desired, axis=1, keepdims=True)
            actual, desired = actual / scale, desired / scale
            np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol, err_msg=name)
        elif name == "excess_loss":
            # Compared as error norms sqrt(J - J*), which the engines compute from e = u - r w (or v = w - u): near
            # the optimum that difference cancels to a resolution of ~ulp(u), i.e. 1e-16 sqrt(J0) (engines that
            # round a multiply-add once or twice then differ by 100% of a 1e-31 J0 loss). Atol: 1000 such ulps.
            floor = 1e-13 * np.sqrt(np.max(desired[0])) if desired.size else 0.0
            np.testing.assert_allclose(np.sqrt(actual), np.sqrt(desired), rtol=rtol, atol=floor, err_msg=name)
        else:
            np.testing.assert_allclose(actual, desired, rtol=rtol, atol=0, err_msg=name)


@pytest.fixture(autouse=True, params=["blocks", "runs"])
def layout(request, monkeypatch):
    """Every test on both fused-loop layouts (``dynamics.RUNS_LAYOUT_MIN_D``), whatever the test's d."""
    monkeypatch.setattr(dynamics, "RUNS_LAYOUT_MIN_D", 10**9 if request.param == "blocks" else 1)
    return request.param


@pytest.fixture
def tight_bounds(monkeypatch):
    """``|a| <= 30``: BNGD runs with ``eps_a > 2`` (``a - p`` grows like ``(1 - eps_a)^k``) freeze after a few
    steps, each at its own step, while the rest of the dynamics stays in a regime that does not amplify round-off
    (so two engines that sum in different orders agree to 1e-12)."""

    def bounds(max_value):
        _, whw_bound, growth, cap = kernels.blowup_bounds(max_value)
        return 30.0, whw_bound, growth, cap

    monkeypatch.setattr(dynamics, "blowup_bounds", bounds)


@pytest.mark.parametrize("record_every", [1, 7, 60])
def test_bngd_fused_equals_eager_in_every_recording_mode_with_frozen_runs(tight_bounds, record_every):
    p = Problem.from_spectrum(12, 30.0, "log", seed=3)
    eps = np.geomspace(1e-3, 0.05, 50)
    eps_a = np.r_[np.linspace(2.05, 3.0, 25), np.tile([0.5, 1.0], 13)[:25]]
    fused = bngd(p, eps, 60, eps_a=eps_a, record_every=record_every)
    eager = bngd(p, eps, 60, eps_a=eps_a, record_every=record_every, compile=False)
    frozen = fused.diverged_at[fused.diverged_at > 0]
    assert len(set(frozen.tolist())) >= 5 and (frozen % 8 != 0).any() and (fused.diverged_at[25:] == -1).all()
    assert_same(fused, eager, BNGD_FIELDS)
    # A frozen run keeps its last state: nothing recorded after the freeze moves again, and |a| stays in range.
    i = int(np.argmax(fused.diverged_at))
    after = fused.steps >= fused.diverged_at[i] - 1
    assert np.all(fused.a[after, i] == fused.a_final[i]) and np.all(np.abs(fused.a) <= 30.0)


def test_recording_modes_see_the_same_trajectory():
    p = Problem.from_spectrum(20, 100.0, "linear", seed=1)
    eps = np.geomspace(1e-3, 1e3, 40)
    every = bngd(p, eps, 200)
    sparse = bngd(p, eps, 200, record_every=50)
    end = bngd(p, eps, 200, record_every=200)
    for name in ("excess_loss", "a", "w_norm", "eff_step"):
        np.testing.assert_allclose(getattr(sparse, name), getattr(every, name)[::50], rtol=1e-14, err_msg=name)
        np.testing.assert_allclose(getattr(end, name), getattr(every, name)[[0, -1]], rtol=1e-14, err_msg=name)
    np.testing.assert_allclose(end.w_final, every.w_final, rtol=1e-14)


@pytest.mark.parametrize("record_every", [1, 13, 400])
def test_gd_fused_equals_eager_with_divergence(record_every):
    p = Problem.from_spectrum(10, 100.0, "log", seed=4)
    eps = np.r_[np.geomspace(1e-3, 0.019, 20), np.geomspace(0.03, 1e6, 21)]  # 2/lambda_max = 0.02
    fused = gd(p, eps, 400, record_every=record_every)
    eager = gd(p, eps, 400, record_every=record_every, compile=False)
    assert (fused.diverged_at[:20] == -1).all() and (fused.diverged_at[20:] > 0).all()
    assert len(set(fused.diverged_at[20:].tolist())) > 10  # frozen at many different steps
    assert_same(fused, eager, ("excess_loss", "w_final"))
    assert np.isfinite(fused.excess_loss).all() and np.isfinite(fused.w_final).all()


@pytest.mark.parametrize("compile_", [True, False])
def test_float32_gd_freezes_before_overflow(compile_):
    p = Problem.from_spectrum(10, 100.0, "log", seed=4)
    eps = np.array([0.001, 0.01, 0.019, 0.03, 1.0, 1e4, 1e8])
    lo = gd(p, eps, 3000, record_every=10, dtype=torch.float32, compile=compile_)
    hi = gd(p, eps, 3000, record_every=10)
    assert np.isfinite(lo.excess_loss).all() and np.isfinite(lo.w_final).all()
    np.testing.assert_array_equal(lo.diverged_at > 0, hi.diverged_at > 0)
    # The float32 bound (gap growth 10^12.5) is reached long before the float64 one (10^100), never after.
    assert (lo.diverged_at[3:] <= hi.diverged_at[3:]).all()
    assert (lo.excess_loss[:, 3:].max(axis=0) / lo.excess_loss[0, 3:] <= 10**12.5 * 1.0001).all()
    np.testing.assert_allclose(lo.excess_loss[:30, :3], hi.excess_loss[:30, :3], rtol=1e-4)


def test_float32_bngd_fused_is_close_to_float64():
    p = Problem.from_spectrum(8, 10.0, seed=2)
    lo = bngd(p, [0.1, 1.0, 1e6], 200, eps_a=[1.0, 1.0, 2.5], record_every=200, dtype=torch.float32)
    hi = bngd(p, [0.1, 1.0, 1e6], 200, eps_a=[1.0, 1.0, 2.5], record_every=200)
    np.testing.assert_allclose(lo.a[-1, :2], hi.a[-1, :2], rtol=1e-4)
    assert lo.diverged.tolist() == [False, False, True] and np.isfinite(lo.a_final).all()


def test_torch_compiled_segments_equal_eager(monkeypatch, tight_bounds):
    """The GPU path (``torch.compile`` of the same torch steps, 8 per call) run on the CPU."""
    p = Problem.from_spectrum(12, 30.0, "log", seed=3)
    eps, eps_a = np.geomspace(1e-3, 0.05, 16), np.linspace(0.5, 3.0, 16)
    eager = bngd(p, eps, 30, eps_a=eps_a, record_every=11, compile=False)
    g_eager = gd(p, [0.01, 0.05, 10.0], 30, record_every=11, compile=False)
    monkeypatch.setattr(dynamics, "_engine", lambda *args: "torch-compiled")
    assert_same(bngd(p, eps, 30, eps_a=eps_a, record_every=11), eager, BNGD_FIELDS)
    assert (eager.diverged_at > 0).sum() >= 5
    assert_same(gd(p, [0.01, 0.05, 10.0], 30, record_every=11), g_eager, ("excess_loss", "w_final"))


@settings(max_examples=15, deadline=None)
@given(
    d=st.integers(1, 9),
    runs=st.integers(1, 30),
    steps=st.integers(0, 40),
    record_every=st.integers(1, 45),
    log_eps=st.floats(-3, -1.5),  # eps <= 0.3: larger steps on kappa = 20 amplify round-off in some runs
    eps_a=st.sampled_from([0.1, 0.5, 1.0, 1.5]),
    seed=st.integers(0, 10**6),
)
def test_fused_equals_eager_on_random_problems(d, runs, steps, record_every, log_eps, eps_a, seed):
    """Random regimes, some of which amplify round-off (eps_hat above the edge for a while): the engines sum in
    different orders, so they agree to 1e-9 here; the 1e-12 checks above pick regimes that do not amplify."""
    p = Problem.from_spectrum(d, 20.0, "log", seed=seed)
    eps = 10.0 ** np.linspace(log_eps, log_eps + 1, runs)
    assert_same(
        bngd(p, eps, steps, eps_a=eps_a, seed=seed, record_every=record_every),
        bngd(p, eps, steps, eps_a=eps_a, seed=seed, record_every=record_every, compile=False),
        BNGD_FIELDS,
        rtol=1e-9,
    )
    assert_same(
        gd(p, eps / 20, steps, seed=seed, record_every=record_every),
        gd(p, eps / 20, steps, seed=seed, record_every=record_every, compile=False),
        ("excess_loss", "w_final"),
    )


def test_blowup_bounds_fit_the_dtype():
    assert kernels.blowup_bounds(np.finfo(np.float64).max) == pytest.approx((1e100, 1e250, 1e100, 1e250))
    a32, whw32, growth32, cap32 = kernels.blowup_bounds(float(np.finfo(np.float32).max))
    assert 1e10 < a32 < 1e15 and 1e28 < whw32 < 1e34 and cap32 * 1e4 < np.finfo(np.float32).max
