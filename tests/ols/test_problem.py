import numpy as np
import pytest

from bnlab import BnlabError
from bnlab.ols import Problem, initial_weights
from bnlab.ols.problem import draw_vector


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


# -- problem families -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rotate", [True, False])
def test_marchenko_pastur_moments_match_the_wishart_law(rotate):
    """Centred X (n x d): X^T X is Wishart with m = n - 1 degrees of freedom, so mean(lambda) = m / n and
    mean(lambda^2) = m (m + d + 1) / n^2 (E tr W^2 = m d (m + d + 1)); both constructions draw from that law."""
    d, aspect = 200, 3.0
    n, m = 600, 599
    draws = [
        Problem.from_spectrum(d, spectrum="marchenko-pastur", aspect=aspect, seed=s, rotate=rotate) for s in range(4)
    ]
    lam = np.concatenate([p.eigvals for p in draws])
    assert np.mean(lam) == pytest.approx(m / n, rel=0.01)
    assert np.mean(lam**2) == pytest.approx(m * (m + d + 1) / n**2, rel=0.02)
    edge = 1 / np.sqrt(aspect)
    assert lam.max() < (1 + edge) ** 2 * 1.05 and lam.min() > (1 - edge) ** 2 * 0.9
    for p in draws:
        np.testing.assert_allclose(np.linalg.eigvalsh(p.H)[::-1], p.eigvals, rtol=1e-10, atol=1e-12)


def test_spiked_spectrum_is_block_equicorrelated_and_its_top_grows_with_d():
    p = Problem.from_spectrum(9, spectrum="spiked", rho=0.25, spikes=3, seed=0)
    block = 0.75 * np.eye(3) + 0.25
    np.testing.assert_allclose(p.H, np.kron(np.eye(3), block), atol=1e-14)
    np.testing.assert_allclose(p.eigvals, [1.5, 1.5, 1.5] + [0.75] * 6, rtol=1e-14)
    np.testing.assert_allclose(p.H @ p.u, p.g, atol=1e-12)
    tops = [Problem.from_spectrum(d, spectrum="spiked", rho=0.5, rotate=False).lambda_max for d in (10, 100, 1000)]
    np.testing.assert_allclose(tops, [5.5, 50.5, 500.5])


def test_a_problem_in_the_eigenbasis_stores_no_dense_matrix():
    """rotate=False: H = diag(lambda), Q = I are implied (d = 10^4 would be 1.6 GB); everything else agrees with
    the dense matrices, which are still built on demand."""
    p = Problem.from_spectrum(12, 50.0, "log", seed=3, rotate=False)
    assert p.hessian is None and p.basis is None
    w = np.random.default_rng(0).standard_normal((3, 12))
    np.testing.assert_array_equal(p.to_eig(w), w)
    np.testing.assert_array_equal(p.from_eig(w), w)
    np.testing.assert_allclose(p.H, np.diag(p.eigvals))
    np.testing.assert_allclose(p.eigvecs, np.eye(12))
    dense = (p.c - 2 * w @ p.g + np.einsum("bi,ij,bj->b", w, p.H, w)) / 2
    np.testing.assert_allclose(p.loss(w), dense, rtol=1e-12)
    big = Problem.from_spectrum(10_000, 10.0, "linear", seed=0, rotate=False)
    assert big.hessian is None and "H" not in vars(big)  # not built by construction or by u, g_eig, u_norm_H2
    assert big.u_norm_H2 > 0 and big.u.shape == (10_000,) and "H" not in vars(big)


@pytest.mark.parametrize(("d", "spikes"), [(2, 1), (9, 3), (10, 1), (41, 4), (7, 7)])
def test_spiked_eigenbasis_in_closed_form_diagonalises_h(d, spikes):
    """The block means and Helmert vectors are an orthonormal eigenbasis of H (no dense eigensolver)."""
    p = Problem.from_spectrum(d, spectrum="spiked", rho=0.3, spikes=spikes, seed=4)
    Q = p.eigvecs
    np.testing.assert_allclose(Q.T @ Q, np.eye(d), atol=1e-14)
    np.testing.assert_allclose(p.H @ Q, Q * p.eigvals, atol=1e-13)
    np.testing.assert_allclose(p.eigvals, np.linalg.eigvalsh(p.H)[::-1], atol=1e-13)


@pytest.mark.parametrize("law", ["gaussian", "rademacher", "student-t", "sparse"])
def test_u_laws_have_unit_variance_coordinates_and_unit_option(law):
    u = draw_vector(20000, "gaussian", np.random.default_rng(1), law=law, sparsity=0.05, dof=5.0)
    assert np.mean(u**2) == pytest.approx(1.0, rel=0.05)  # ||u||^2 ~ d
    if law == "rademacher":
        np.testing.assert_allclose(np.abs(u), 1.0)
    if law == "sparse":
        assert np.count_nonzero(u) == 1000
    if law == "student-t":
        assert np.mean(u**4) > 5.0  # heavy tails: kurtosis 3 + 6 / (dof - 4) = 9, a Gaussian's is 3
    unit = Problem.from_spectrum(50, 10.0, seed=1, u_law=law, u_norm="unit")
    assert np.linalg.norm(unit.u) == pytest.approx(1.0)
    assert unit.description.startswith("linear d=50") and law in unit.description


def test_spacing_is_an_alias_of_spectrum():
    a = Problem.from_spectrum(6, 10.0, spacing="log", seed=2)
    b = Problem.from_spectrum(6, 10.0, "log", seed=2)
    np.testing.assert_array_equal(a.H, b.H)
    with pytest.raises(BnlabError, match="disagree"):
        Problem.from_spectrum(6, 10.0, "log", spacing="linear")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spectrum": "marchenko-pastur", "aspect": 1.0}, "aspect"),
        ({"spectrum": "spiked", "rho": 1.0}, "rho"),
        ({"spectrum": "spiked", "spikes": 11}, "spikes"),
        ({"u_law": "cauchy"}, "u_law"),
        ({"u_law": "sparse", "sparsity": 0.0}, "sparsity"),
        ({"u_law": "student-t", "dof": 2.0}, "dof"),
        ({"u_norm": "huge"}, "normalisation"),
        ({"spectrum": "log", "kappa": float("nan")}, "kappa"),
    ],
)
def test_invalid_family_fields_are_rejected_with_one_clear_error(kwargs, message):
    with pytest.raises(BnlabError, match=message):
        Problem.from_spectrum(10, **kwargs)


def test_rotations_are_reused_across_kappa_and_spacing_without_changing_any_draw():
    """A linear or log problem's Haar rotation is its seed's first draw: reused (one QR per (d, seed)), and the
    problems are bit-identical to those drawn with an empty cache."""
    from bnlab.ols import problem as module

    built = [Problem.from_spectrum(60, k, s, seed=8) for k in (10.0, 1e4) for s in ("linear", "log")]
    assert all(p.eigvecs is built[0].eigvecs for p in built)  # one rotation
    assert not built[0].eigvecs.flags.writeable  # shared: read-only
    module._haar_cached.cache_clear()
    fresh = Problem.from_spectrum(60, 1e4, "log", seed=8)
    np.testing.assert_array_equal(fresh.H, built[-1].H)
    np.testing.assert_array_equal(fresh.g, built[-1].g)  # u, drawn after Q, is unchanged too
    assert Problem.from_spectrum(60, 10.0, seed=9).eigvecs is not built[0].eigvecs
