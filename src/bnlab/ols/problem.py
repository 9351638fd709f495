"""Least-squares problems: the moments (H, g, c) of SPEC section 1, validated, with H's eigendecomposition.

Everything downstream works in H's eigenbasis, ``H = Q diag(lambda) Q^T``, where every step of GD or BNGD is O(d)
per run: ``lambda`` is ``Problem.eigvals`` (descending) and a vector ``v`` has coordinates ``Q^T v`` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np
from scipy.linalg import eigvalsh_tridiagonal

from bnlab.errors import BnlabError

SpectrumKind = Literal["linear", "log", "marchenko-pastur", "spiked"]
ULaw = Literal["gaussian", "rademacher", "student-t", "sparse"]
Normalisation = Literal["gaussian", "unit"]
SPECTRA: tuple[str, ...] = ("linear", "log", "marchenko-pastur", "spiked")
U_LAWS: tuple[str, ...] = ("gaussian", "rademacher", "student-t", "sparse")
NORMALISATIONS: tuple[str, ...] = ("gaussian", "unit")

# Relative asymmetry ||H - H^T|| / ||H|| tolerated as round-off from building H numerically.
_SYMMETRY_RTOL = 1e-10


def _as_finite_array(name: str, value, ndim: int) -> np.ndarray:
    if np.iscomplexobj(value):  # float64 conversion would drop the imaginary part silently
        raise BnlabError(f"{name} must be real, got complex values")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BnlabError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != ndim:
        shape = "a single number" if ndim == 0 else f"{ndim} dimension(s)"
        raise BnlabError(f"{name} must be {shape}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BnlabError(f"{name} contains NaN or infinite values")
    return arr


def _singularity_cause(X: np.ndarray, Xc: np.ndarray) -> str | None:
    """Why the centred data ``Xc`` has rank below its column count d, in the data's terms (columns 0-based)."""
    n, d = X.shape
    constant = np.flatnonzero(np.ptp(X, axis=0) == 0)
    if constant.size:
        return f"column(s) {constant.tolist()} are constant (zero after centring)"
    if n - 1 < d:
        return f"{n} rows for {d} columns (centred, n rows have rank at most n - 1 = {n - 1} < {d})"
    _, sv, vt = np.linalg.svd(Xc, full_matrices=False)
    if sv[-1] > d * np.finfo(np.float64).eps ** 0.5 * sv[0]:
        return None
    null = np.abs(vt[-1])
    involved = np.flatnonzero(null > 0.1 * null.max()).tolist()
    return f"columns {involved} are collinear (one is a linear combination of the others)"


@dataclass(frozen=True, eq=False)
class Problem:
    """An OLS problem ``J0(w) = (c - 2 w^T g + w^T H w) / 2`` with H symmetric positive definite.

    Build one with :meth:`from_moments`, :meth:`from_data` or :meth:`from_spectrum`; the constructor
    expects already-validated arrays and is not meant to be called directly.

    A problem built in H's eigenbasis (``from_spectrum(..., rotate=False)``) stores neither H nor Q: ``H`` and
    ``eigvecs`` are then built on first use, and :meth:`to_eig` / :meth:`from_eig` are copies, so that a
    d = 10^4 problem costs O(d) memory and time instead of two dense d x d matrices (1.6 GB).
    """

    hessian: np.ndarray | None  # H in feature coordinates; None: diag(eigvals)
    g: np.ndarray
    c: float
    eigvals: np.ndarray  # lambda_1 >= ... >= lambda_d > 0
    basis: np.ndarray | None  # Q, columns are eigenvectors; None: the identity
    description: str = "custom"

    @cached_property
    def H(self) -> np.ndarray:
        """``H`` in feature coordinates, dense."""
        return np.diag(self.eigvals) if self.hessian is None else self.hessian

    @cached_property
    def eigvecs(self) -> np.ndarray:
        """``Q`` (columns are eigenvectors of H), dense."""
        return np.eye(self.d) if self.basis is None else self.basis

    def to_eig(self, v) -> np.ndarray:
        """``Q^T v`` for vectors on the last axis (``v @ Q``): coordinates in H's eigenbasis."""
        v = np.asarray(v, dtype=np.float64)
        return v.copy() if self.basis is None else v @ self.basis

    def from_eig(self, v) -> np.ndarray:
        """``Q v`` for eigenbasis coordinates on the last axis (``v @ Q^T``): back to feature coordinates."""
        v = np.asarray(v, dtype=np.float64)
        return v.copy() if self.basis is None else v @ self.basis.T

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_moments(cls, H, g, c: float | None = None, description: str = "moments") -> Problem:
        """Validate ``H = E[x x^T]``, ``g = E[x y]``, ``c = E[y^2]`` (``c`` defaults to the noiseless
        ``u^T H u``, i.e. ``J* = 0``)."""
        H = _as_finite_array("H", H, 2)
        g = _as_finite_array("g", g, 1)
        d = H.shape[0]
        if H.shape != (d, d):
            raise BnlabError(f"H must be square, got shape {H.shape}")
        if d == 0:
            raise BnlabError("H must have at least one row")
        if g.shape != (d,):
            raise BnlabError(f"g must have shape ({d},) to match H, got {g.shape}")
        scale = float(np.max(np.abs(H)))
        if scale == 0.0:
            raise BnlabError("H is zero, not positive definite")
        if np.max(np.abs(H - H.T)) > _SYMMETRY_RTOL * scale:
            raise BnlabError("H is not symmetric")
        H = (H + H.T) / 2
        eigvals, eigvecs = np.linalg.eigh(H)
        # Positive definite with a margin above round-off: a numerically singular H has no unique optimum.
        if eigvals[0] <= d * np.finfo(np.float64).eps * eigvals[-1]:
            raise BnlabError(f"H is not positive definite (smallest eigenvalue {eigvals[0]:.3g})")
        eigvals, eigvecs = eigvals[::-1].copy(), eigvecs[:, ::-1].copy()
        u_eig = (eigvecs.T @ g) / eigvals
        uHu = float(np.sum(eigvals * u_eig**2))
        c = uHu if c is None else float(_as_finite_array("c", c, 0))
        if c < uHu * (1 - 1e-9) - 1e-12:
            raise BnlabError(f"c = E[y^2] = {c:.6g} is below u^T H u = {uHu:.6g}: the moments are inconsistent")
        return cls(hessian=H, g=g, c=float(c), eigvals=eigvals, basis=eigvecs, description=description)

    @classmethod
    def from_data(cls, X, y) -> Problem:
        """Empirical moments of centred data: ``H = Xc^T Xc / n``, ``g = Xc^T yc / n``, ``c = yc^T yc / n``.

        Centring matches BN, which subtracts the batch mean of ``x^T w``.
        """
        X = _as_finite_array("X", X, 2)
        y = _as_finite_array("y", y, 1)
        if X.shape[0] != y.shape[0]:
            raise BnlabError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries")
        if X.shape[0] < 2:
            raise BnlabError("need at least two samples")
        Xc, yc = X - X.mean(axis=0), y - y.mean()
        n = X.shape[0]
        try:
            return cls.from_moments(Xc.T @ Xc / n, Xc.T @ yc / n, float(yc @ yc / n), description=f"data n={n}")
        except BnlabError as exc:
            cause = _singularity_cause(X, Xc)
            if cause is None:
                raise
            raise BnlabError(f"H = Xc^T Xc / n from the data is singular: {cause}") from exc

    @classmethod
    def from_spectrum(
        cls,
        d: int,
        kappa: float = 100.0,
        spectrum: SpectrumKind | None = None,
        seed: int = 0,
        noise: float = 0.0,
        u_norm: Normalisation = "gaussian",
        lambda_min: float = 1.0,
        rotate: bool = True,
        *,
        spacing: SpectrumKind | None = None,
        u_law: ULaw = "gaussian",
        aspect: float = 4.0,
        rho: float = 0.5,
        spikes: int = 1,
        sparsity: float = 0.1,
        dof: float = 3.0,
    ) -> Problem:
        """A synthetic problem from one of four spectrum families (``spacing`` is an alias of ``spectrum``):

        - ``linear`` / ``log``: lambda spaced evenly / geometrically in ``[lambda_min, kappa * lambda_min]``;
        - ``marchenko-pastur``: ``H = Xc^T Xc / n`` for Gaussian ``X`` (n x d), ``n = round(aspect * d)``,
          columns centred (so ``Xc^T Xc`` is Wishart with n - 1 degrees of freedom); lambda fills
          ``[(1 - aspect^-1/2)^2, (1 + aspect^-1/2)^2]`` (``kappa`` and ``lambda_min`` do not apply);
        - ``spiked``: ``spikes`` equal blocks of equicorrelated features, ``H_b = (1 - rho) I + rho 1 1^T``
          (one block: the whole equicorrelated matrix). lambda is ``1 - rho + rho m_b`` for a block of m_b
          features and ``1 - rho`` (d - spikes times): lambda_max grows like ``rho d / spikes``.

        ``H = Q diag(lambda) Q^T``: Q is Haar-random for ``linear``, ``log``, ``marchenko-pastur`` (X's law is
        rotation invariant) and the blocks' own eigenvectors for ``spiked``. ``rotate=False`` takes ``Q = I``
        (H diagonal), skipping the O(d^3) construction (minutes at d = 10^4); GD and BNGD are equivariant under
        rotations, so with an isotropic u every quantity the dynamics produce has the same law either way (a
        Marchenko-Pastur spectrum is then drawn from the bidiagonal Laguerre model, :func:`wishart_eigvals`).

        ``u = w*`` is drawn in the feature coordinates with i.i.d. unit-variance coordinates of law ``u_law``
        (:func:`draw_vector`), so ``||u||^2 ~ d`` (``u_norm="gaussian"``), or that draw scaled to unit length
        (``"unit"``). ``c = u^T H u + noise`` where ``noise`` is the label-noise variance.
        """
        kind = _spectrum_kind(spectrum, spacing)
        if int(d) != d or d < 1:
            raise BnlabError(f"d must be a positive integer, got {d}")
        if not (np.isfinite(noise) and noise >= 0):
            raise BnlabError(f"noise variance must be >= 0, got {noise}")
        d = int(d)
        rng = np.random.default_rng(seed)
        lam, Q, H = _family(kind, d, kappa, lambda_min, aspect, rho, spikes, rotate, rng)
        u = draw_vector(d, u_norm, rng, law=u_law, sparsity=sparsity, dof=dof)
        u_eig = Q.T @ u if Q is not None else u
        c = float(np.sum(lam * u_eig**2)) + noise
        params = {
            "linear": f"kappa={kappa:g}",
            "log": f"kappa={kappa:g}",
            "marchenko-pastur": f"aspect={aspect:g}",
            "spiked": f"rho={rho:g} spikes={spikes}",
        }[kind]
        desc = f"{kind} d={d} {params} seed={seed} u={u_law}/{u_norm}{'' if rotate else ' Q=I'}"
        if Q is None:
            return cls(hessian=None, g=lam * u_eig, c=c, eigvals=lam, basis=None, description=desc)
        return cls(hessian=H, g=Q @ (lam * u_eig), c=c, eigvals=lam, basis=Q, description=desc)

    # -- derived quantities -------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return int(self.eigvals.shape[0])

    @property
    def lambda_max(self) -> float:
        return float(self.eigvals[0])

    @property
    def lambda_min(self) -> float:
        return float(self.eigvals[-1])

    @property
    def kappa(self) -> float:
        return self.lambda_max / self.lambda_min

    @cached_property
    def g_eig(self) -> np.ndarray:
        """``Q^T g``."""
        return self.to_eig(self.g)

    @cached_property
    def u_eig(self) -> np.ndarray:
        """``Q^T u`` with ``u = H^{-1} g``."""
        return self.g_eig / self.eigvals

    @cached_property
    def u(self) -> np.ndarray:
        """The OLS optimum ``u = w* = H^{-1} g``."""
        return self.from_eig(self.u_eig)

    @cached_property
    def u_norm_H2(self) -> float:
        """``||u||_H^2 = u^T H u``, the squared optimal BN scale ``a*^2``."""
        return float(np.sum(self.eigvals * self.u_eig**2))

    @property
    def j_star(self) -> float:
        """Optimal loss ``J* = (c - u^T H u) / 2``, shared by OLS and its BN version."""
        return (self.c - self.u_norm_H2) / 2

    def loss(self, w) -> np.ndarray:
        """Plain OLS loss ``J0(w)`` for one or a batch of weight vectors (last axis d)."""
        w = np.asarray(w, dtype=np.float64)
        return (self.c - 2 * w @ self.g + self.to_eig(w) ** 2 @ self.eigvals) / 2

    def bn_loss(self, a, w) -> np.ndarray:
        """BN loss ``J(a, w) = (c - 2 a w^T g / ||w||_H + a^2) / 2``."""
        w = np.asarray(w, dtype=np.float64)
        norm_h = np.sqrt(self.to_eig(w) ** 2 @ self.eigvals)
        return (self.c - 2 * np.asarray(a) * (w @ self.g) / norm_h + np.asarray(a) ** 2) / 2

    def __repr__(self) -> str:
        return f"Problem({self.description}, d={self.d}, kappa={self.kappa:.4g})"


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal fixed."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# Haar rotations kept for reuse, keyed by (d, generator state): ~8 MB each at d = 1000, and only up to this d.
_HAAR_CACHE_MAX_D = 2000


def _haar_from_seed(d: int, rng: np.random.Generator) -> np.ndarray:
    """``random_orthogonal(d, rng)``, reused when the same generator state asks again (read-only).

    The rotation of a linear or log problem is the first draw of its seed's generator and depends on nothing else,
    so every kappa and both spacings of one (d, seed) share it: the family sweeps (overparam: 4 kappas x 2 spacings)
    and the dimension cases that share a problem's seed then pay its O(d^3) QR once. The generator is left exactly
    where a fresh draw would leave it, so what follows (u) is drawn the same either way.
    """
    if d > _HAAR_CACHE_MAX_D:
        return random_orthogonal(d, rng)
    state = rng.bit_generator.state
    Q, after = _haar_cached(d, _freeze(state))
    rng.bit_generator.state = after
    return Q


def _freeze(value):
    """A hashable copy of a generator state (nested dicts of ints and strings)."""
    return tuple(sorted((k, _freeze(v)) for k, v in value.items())) if isinstance(value, dict) else value


def _thaw(value):
    return {k: _thaw(v) for k, v in value} if isinstance(value, tuple) else value


@lru_cache(maxsize=12)
def _haar_cached(d: int, state: tuple) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng()
    rng.bit_generator.state = _thaw(state)
    Q = random_orthogonal(d, rng)
    Q.setflags(write=False)
    return Q, rng.bit_generator.state


def draw_vector(
    d: int,
    norm: Normalisation,
    rng: np.random.Generator,
    law: ULaw = "gaussian",
    sparsity: float = 0.1,
    dof: float = 3.0,
) -> np.ndarray:
    """A vector with i.i.d. zero-mean, unit-variance coordinates (so ``||v||^2 ~ d``), or that draw scaled to
    unit length (``norm="unit"``).

    ``law``: ``gaussian``; ``rademacher`` (+-1); ``student-t`` with ``dof`` > 2 degrees of freedom, divided
    by its standard deviation ``sqrt(dof / (dof - 2))`` (heavy tails); ``sparse``: ``max(1, round(sparsity d))``
    coordinates at random positions are Gaussian times ``sqrt(d / k)``, the others exactly zero.
    """
    if norm not in NORMALISATIONS:
        raise BnlabError(f"normalisation must be 'gaussian' or 'unit', got {norm!r}")
    if law == "gaussian":
        v = rng.standard_normal(d)
    elif law == "rademacher":
        v = rng.choice(np.array([-1.0, 1.0]), size=d)
    elif law == "student-t":
        if not (np.isfinite(dof) and dof > 2):
            raise BnlabError(f"dof must be > 2 for a Student-t law with finite variance, got {dof}")
        v = rng.standard_t(dof, size=d) / np.sqrt(dof / (dof - 2))
    elif law == "sparse":
        if not (0 < sparsity <= 1):
            raise BnlabError(f"sparsity must be in (0, 1], got {sparsity}")
        k = max(1, round(sparsity * d))
        v = np.zeros(d)
        v[rng.choice(d, size=k, replace=False)] = rng.standard_normal(k) * np.sqrt(d / k)
    else:
        raise BnlabError(f"u_law must be one of {', '.join(U_LAWS)}, got {law!r}")
    return v / np.linalg.norm(v) if norm == "unit" else v


def initial_weights(d: int, seeds, norm: Normalisation = "gaussian") -> np.ndarray:
    """One initial weight vector per seed, shape ``(len(seeds), d)``, each from ``default_rng(seed)``: standard
    Gaussian (``||w0||^2 ~ d``) or unit length. Its scale is set apart from u's (``norm``, not ``u_norm``).

    A seed's ``w0`` does not depend on the other seeds in the batch, so a run is reproducible on its own.
    """
    seeds = np.atleast_1d(np.asarray(seeds))
    return np.stack([draw_vector(d, norm, np.random.default_rng([int(s), d, 0x5EED])) for s in seeds])


def wishart_eigvals(d: int, dof: int, rng: np.random.Generator) -> np.ndarray:
    """Eigenvalues (descending) of ``Z^T Z`` for a Gaussian ``Z`` (dof x d, dof >= d), in O(d^2).

    Dumitriu and Edelman's bidiagonal model (beta = 1): ``Z^T Z`` has the law of ``B B^T`` with B lower
    bidiagonal, diagonal ``chi_dof, chi_{dof-1}, ..., chi_{dof-d+1}`` and subdiagonal ``chi_{d-1}, ..., chi_1``,
    all independent. ``B B^T`` is tridiagonal: diagonal ``x_i^2 + y_{i-1}^2``, off-diagonal ``x_i y_i``.
    """
    x = np.sqrt(rng.chisquare(dof - np.arange(d)))
    y = np.sqrt(rng.chisquare(np.arange(d - 1, 0, -1))) if d > 1 else np.empty(0)
    diag = x**2 + np.r_[0.0, y**2]
    lam = eigvalsh_tridiagonal(diag, x[:-1] * y)
    return lam[::-1].copy()


def _spectrum_kind(spectrum, spacing) -> str:
    if spectrum is not None and spacing is not None and spectrum != spacing:
        raise BnlabError(f"spectrum={spectrum!r} and its alias spacing={spacing!r} disagree")
    kind = spectrum if spectrum is not None else (spacing if spacing is not None else "linear")
    if kind not in SPECTRA:
        raise BnlabError(f"spectrum (spacing) must be one of {', '.join(SPECTRA)}, got {kind!r}")
    return kind


def _family(kind, d, kappa, lambda_min, aspect, rho, spikes, rotate, rng):
    """``(lambda descending, Q or None for the identity, H in feature coordinates or None)`` of a family."""
    if kind in ("linear", "log"):
        if not (np.isfinite(kappa) and kappa >= 1):
            raise BnlabError(f"kappa must be >= 1, got {kappa}")
        if not (np.isfinite(lambda_min) and lambda_min > 0):
            raise BnlabError(f"lambda_min must be > 0, got {lambda_min}")
        spaced = np.linspace if kind == "linear" else np.geomspace
        lam = spaced(kappa * lambda_min, lambda_min, d)
        if not rotate:
            return lam, None, None
        Q = _haar_from_seed(d, rng)
        return lam, Q, _symmetric((Q * lam) @ Q.T)
    if kind == "marchenko-pastur":
        n = round(aspect * d) if np.isfinite(aspect) else 0
        if not (np.isfinite(aspect) and aspect > 1 and n - 1 >= d):
            raise BnlabError(f"aspect = n/d must exceed 1 with n - 1 >= d (H positive definite), got {aspect}")
        if not rotate:
            return wishart_eigvals(d, n - 1, rng) / n, None, None
        X = rng.standard_normal((n, d))
        X -= X.mean(axis=0)
        return _eigh_desc(_symmetric(X.T @ X / n))
    # spiked
    if not (np.isfinite(rho) and 0 <= rho < 1):
        raise BnlabError(f"rho must be in [0, 1) for a positive definite equicorrelated H, got {rho}")
    if int(spikes) != spikes or not 1 <= spikes <= d:
        raise BnlabError(f"spikes must be an integer in [1, d = {d}], got {spikes}")
    sizes = np.array([len(b) for b in np.array_split(np.arange(d), int(spikes))])
    lam = np.sort(np.r_[1 - rho + rho * sizes, np.full(d - len(sizes), 1 - rho)])[::-1].copy()
    if not rotate:
        return lam, None, None
    H = np.zeros((d, d))
    start = 0
    for m in sizes:
        H[start : start + m, start : start + m] = rho
        start += m
    H[np.diag_indices(d)] = 1.0
    return lam, _equicorrelated_eigvecs(sizes), H


def _equicorrelated_eigvecs(sizes: np.ndarray) -> np.ndarray:
    """Eigenvectors of the block equicorrelated H, in closed form (a dense eigensolver takes seconds at d = 1000).

    Block b (features ``[s_b, s_b + m_b)``) holds the eigenvector ``1 / sqrt(m_b)`` on its features (eigenvalue
    ``1 - rho + rho m_b``) and, for eigenvalue ``1 - rho``, the Helmert basis of the vectors summing to 0 there:
    ``(1, ..., 1, -k, 0, ...) / sqrt(k (k + 1))`` for k = 1 .. m_b - 1. Columns: the block means in the order of
    ``sizes`` (non-increasing, so eigenvalues descending), then the Helmert vectors. ``1 - rho`` is repeated, so
    any orthonormal basis of its eigenspace is as good as another: the dynamics commute with rotations inside it.
    """
    d = int(np.sum(sizes))
    Q = np.zeros((d, d))
    col = len(sizes)
    start = 0
    for b, m in enumerate(sizes):
        Q[start : start + m, b] = 1 / np.sqrt(m)
        k = np.arange(1, m)
        rows = np.arange(m)[:, None]
        helmert = (rows < k).astype(float) - np.where(rows == k, k, 0)
        Q[start : start + m, col : col + m - 1] = helmert / np.sqrt(k * (k + 1))
        start, col = start + m, col + m - 1
    return Q


def _eigh_desc(H: np.ndarray):
    lam, Q = np.linalg.eigh(H)
    return lam[::-1].copy(), Q[:, ::-1].copy(), H


def _symmetric(H: np.ndarray) -> np.ndarray:
    # Exactly symmetric despite the round-off of the product that built it.
    return (H + H.T) / 2
