import numpy as np
import pytest

from bnlab import BnlabError
from bnlab.ols import Problem, initial_weights


def test_from_spectrum_has_requested_spectrum_and_optimum():
    p = Problem.from_spectrum(20, 50.0, "log", seed=3)
    assert p.lambda_max == pytest.approx(50.0)
    assert p.lambda_min == pytest.approx(1.0)
    assert p.kappa == pytest.approx(50.0)
    np.testing.assert_allclose(np.linalg.eigvalsh(p.H)[::-1], p.eigvals, rtol=1e-12)
    np.testing.assert_allclose(p.H @ p.u, p.g, rtol=1e-10, atol=1e-12)
    assert p.j_star == pytest.approx(0.0, abs=1e-12)
    gaps = np.diff(p.eigvals[::-1])
    assert np.all(gaps > 0)
    assert np.std(np.diff(np.log(p.eigvals))) < 1e-12  # geometric spacing


def test_linear_spacing_and_unit_norm_and_noise():
    p = Problem.from_spectrum(5, 10.0, "linear", seed=1, u_norm="unit", noise=0.25)
    np.testing.assert_allclose(p.eigvals, [10.0, 7.75, 5.5, 3.25, 1.0])
    assert np.linalg.norm(p.u) == pytest.approx(1.0)
    assert p.j_star == pytest.approx(0.125)


def test_from_data_uses_centred_empirical_moments():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 4)) + 3.0
    w_true = np.array([1.0, -2.0, 0.5, 0.0])
    y = X @ w_true + 0.1 * rng.standard_normal(500) + 7.0
    p = Problem.from_data(X, y)
    coef = np.linalg.lstsq(np.c_[X, np.ones(500)], y, rcond=None)[0][:4]
    np.testing.assert_allclose(p.u, coef, rtol=1e-9)
    residual = y - y.mean() - (X - X.mean(0)) @ coef
    assert p.j_star == pytest.approx(np.mean(residual**2) / 2, rel=1e-9)


def test_losses_agree_at_optimum():
    p = Problem.from_spectrum(6, 20.0, seed=2, noise=0.3)
    assert p.loss(p.u) == pytest.approx(p.j_star)
    assert p.bn_loss(np.sqrt(p.u_norm_H2), 2.5 * p.u) == pytest.approx(p.j_star)


@pytest.mark.parametrize(
    ("H", "g", "message"),
    [
        ([[1.0, 2.0], [0.0, 1.0]], [1.0, 1.0], "not symmetric"),
        ([[1.0, 0.0], [0.0, -1.0]], [1.0, 1.0], "not positive definite"),
        ([[1.0, 1.0], [1.0, 1.0]], [1.0, 1.0], "not positive definite"),
        ([[1.0, np.nan], [np.nan, 1.0]], [1.0, 1.0], "NaN"),
        ([[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0, 1.0], "shape"),
        ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [1.0, 1.0], "square"),
        ([1.0, 2.0], [1.0, 1.0], "dimension"),
    ],
)
def test_invalid_moments_are_rejected_with_a_clear_message(H, g, message):
    with pytest.raises(BnlabError, match=message):
        Problem.from_moments(H, g)


def test_inconsistent_c_and_bad_data_are_rejected():
    with pytest.raises(BnlabError, match="inconsistent"):
        Problem.from_moments(np.eye(2), [1.0, 1.0], c=0.5)
    with pytest.raises(BnlabError, match="NaN"):
        Problem.from_data([[1.0, 2.0], [np.nan, 1.0], [0.0, 1.0]], [1.0, 2.0, 3.0])
    with pytest.raises(BnlabError, match="rows"):
        Problem.from_data(np.ones((3, 2)), np.ones(4))
    with pytest.raises(BnlabError, match="kappa"):
        Problem.from_spectrum(3, 0.5)
    with pytest.raises(BnlabError, match="spacing"):
        Problem.from_spectrum(3, 5.0, spacing="cubic")


def test_initial_weights_are_reproducible_per_seed():
    both = initial_weights(7, [4, 9])
    np.testing.assert_array_equal(both[1], initial_weights(7, 9)[0])
    assert np.linalg.norm(initial_weights(7, [1, 2], "unit"), axis=1) == pytest.approx([1.0, 1.0])
