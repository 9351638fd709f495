"""Least-squares problems: the moments (H, g, c) of SPEC section 1, validated, with H's eigendecomposition.

Everything downstream works in H's eigenbasis, ``H = Q diag(lambda) Q^T``, where every step of GD or BNGD is O(d)
per run: ``lambda`` is ``Problem.eigvals`` (descending) and a vector ``v`` has coordinates ``Q^T v`` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bnlab.errors import BnlabError

Spacing = Literal["linear", "log"]
Normalisation = Literal["gaussian", "unit"]

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
    """

    H: np.ndarray
    g: np.ndarray
    c: float
    eigvals: np.ndarray  # lambda_1 >= ... >= lambda_d > 0
    eigvecs: np.ndarray  # Q, columns are eigenvectors
    description: str = "custom"

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
        return cls(H=H, g=g, c=float(c), eigvals=eigvals, eigvecs=eigvecs, description=description)

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
        kappa: float,
        spacing: Spacing = "linear",
        seed: int = 0,
        noise: float = 0.0,
        u_norm: Normalisation = "gaussian",
        lambda_min: float = 1.0,
        rotate: bool = True,
    ) -> Problem:
        """``H = Q diag(lambda) Q^T`` with Q Haar-random orthogonal and lambda spaced evenly (``linear``) or
        geometrically (``log``) in ``[lambda_min, kappa * lambda_min]``.

        ``u = w*`` is standard Gaussian (``u_norm="gaussian"``, so ``||u||^2 ~ d``) or that draw scaled to
        unit length (``"unit"``); ``c = u^T H u + noise`` where ``noise`` is the label-noise variance.

        ``rotate=False`` takes ``Q = I`` (H diagonal), skipping the O(d^3) Haar draw that takes minutes at
        d = 10^4. GD and BNGD are equivariant under rotations and u, w0 are isotropic, so every quantity the
        dynamics produce has the same distribution either way.
        """
        if int(d) != d or d < 1:
            raise BnlabError(f"d must be a positive integer, got {d}")
        if not (np.isfinite(kappa) and kappa >= 1):
            raise BnlabError(f"kappa must be >= 1, got {kappa}")
        if not (np.isfinite(lambda_min) and lambda_min > 0):
            raise BnlabError(f"lambda_min must be > 0, got {lambda_min}")
        if not (np.isfinite(noise) and noise >= 0):
            raise BnlabError(f"noise variance must be >= 0, got {noise}")
        if spacing not in ("linear", "log"):
            raise BnlabError(f"spacing must be 'linear' or 'log', got {spacing!r}")
        d = int(d)
        rng = np.random.default_rng(seed)
        if spacing == "linear":
            lam = np.linspace(kappa * lambda_min, lambda_min, d)
        else:
            lam = np.geomspace(kappa * lambda_min, lambda_min, d)
        Q = random_orthogonal(d, rng) if rotate else np.eye(d)
        u = draw_vector(d, u_norm, rng)
        H = (Q * lam) @ Q.T if rotate else np.diag(lam)
        u_eig = Q.T @ u
        c = float(np.sum(lam * u_eig**2)) + noise
        desc = f"spectrum d={d} kappa={kappa:g} {spacing} seed={seed} u={u_norm}{'' if rotate else ' Q=I'}"
        # Built from its own eigendecomposition: keep it exact rather than re-diagonalising H.
        H = (H + H.T) / 2 if rotate else H
        return cls(H=H, g=Q @ (lam * u_eig), c=c, eigvals=lam, eigvecs=Q, description=desc)

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

    @property
    def g_eig(self) -> np.ndarray:
        """``Q^T g``."""
        return self.eigvecs.T @ self.g

    @property
    def u_eig(self) -> np.ndarray:
        """``Q^T u`` with ``u = H^{-1} g``."""
        return self.g_eig / self.eigvals

    @property
    def u(self) -> np.ndarray:
        """The OLS optimum ``u = w* = H^{-1} g``."""
        return self.eigvecs @ self.u_eig

    @property
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
        return (self.c - 2 * w @ self.g + np.einsum("...i,ij,...j->...", w, self.H, w)) / 2

    def bn_loss(self, a, w) -> np.ndarray:
        """BN loss ``J(a, w) = (c - 2 a w^T g / ||w||_H + a^2) / 2``."""
        w = np.asarray(w, dtype=np.float64)
        norm_h = np.sqrt(np.einsum("...i,ij,...j->...", w, self.H, w))
        return (self.c - 2 * np.asarray(a) * (w @ self.g) / norm_h + np.asarray(a) ** 2) / 2

    def __repr__(self) -> str:
        return f"Problem({self.description}, d={self.d}, kappa={self.kappa:.4g})"


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal fixed."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def draw_vector(d: int, norm: Normalisation, rng: np.random.Generator) -> np.ndarray:
    """A standard Gaussian vector (``||v||^2 ~ d``), or the same draw scaled to unit length."""
    if norm not in ("gaussian", "unit"):
        raise BnlabError(f"normalisation must be 'gaussian' or 'unit', got {norm!r}")
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v) if norm == "unit" else v


def initial_weights(d: int, seeds, norm: Normalisation = "gaussian") -> np.ndarray:
    """One initial weight vector per seed, shape ``(len(seeds), d)``, each from ``default_rng(seed)``.

    A seed's ``w0`` does not depend on the other seeds in the batch, so a run is reproducible on its own.
    """
    seeds = np.atleast_1d(np.asarray(seeds))
    return np.stack([draw_vector(d, norm, np.random.default_rng([int(s), d, 0x5EED])) for s in seeds])
