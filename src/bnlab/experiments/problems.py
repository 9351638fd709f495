"""The synthetic least-squares problem shared by the OLS experiments (docs/claims.md, "The problem"), and the
keyword arguments every OLS run takes from its config: the ``w0`` seed, its normalisation, device and compile."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field

from bnlab.experiments.base import ExperimentConfig
from bnlab.ols import Problem

# Above this d the Haar rotation (O(d^3), minutes at d = 10^4) is skipped: GD and BNGD are equivariant under
# rotations and u, w0 are isotropic, so the measured quantities have the same distribution with H diagonal.
ROTATE_MAX_D = 1000
# w0 is drawn from its own seed, independent of the problem's (which draws Q and u).
W0_SEED_OFFSET = 1000

Spectrum = Literal["linear", "log", "marchenko-pastur", "spiked"]
ULaw = Literal["gaussian", "rademacher", "student-t", "sparse"]
Norm = Literal["gaussian", "unit"]


def w0_seed(seed: int) -> int:
    """The seed of ``w0`` for the problem of seed ``seed``."""
    return W0_SEED_OFFSET + seed


class OLSConfig(ExperimentConfig):
    """An OLS experiment: its runs start from seeded ``w0`` on the config's device."""

    def start(self, seed: int, norm: Norm = "gaussian", **extra: Any) -> dict[str, Any]:
        """Keyword arguments of ``gd`` / ``bngd`` (plus ``extra``) for a run from seed ``seed``'s ``w0``, on the
        config's device."""
        return {"seed": w0_seed(seed), "w0_norm": norm, "device": self.device, **extra}


class CompiledConfig(OLSConfig):
    """Long BNGD runs, which may use the compiled kernel (``compile``: not part of the run's identity)."""

    compile: bool | Literal["auto"] = "auto"

    def bn_start(self, seed: int, norm: Norm = "gaussian", **extra: Any) -> dict[str, Any]:
        """:meth:`start` plus ``compile``, for ``bngd``."""
        return self.start(seed, norm, compile=self.compile, **extra)


class FamilyConfig(ExperimentConfig):
    """The problem family (docs/problems.md), every field overridable with ``--set``:

    ``spectrum``: ``linear`` | ``log`` (lambda in [1, kappa]) | ``marchenko-pastur`` (H = X^T X / n, Gaussian
    X, n = aspect d, centred) | ``spiked`` (``spikes`` blocks of equicorrelated features, correlation ``rho``;
    lambda_max grows with d); ``spacing`` is accepted as its old name. ``u_law``: the law of u's coordinates
    (gaussian | rademacher | student-t | sparse); ``u_norm``: ``gaussian`` (||u||^2 ~ d) or ``unit``;
    ``w0_norm``: the same for w0, independently of u; ``a0``: BNGD's initial scale.
    """

    spectrum: Spectrum = Field("log", validation_alias=AliasChoices("spectrum", "spacing"))
    kappa: float = Field(100.0, ge=1)  # lambda_max / lambda_min for linear and log spectra
    aspect: float = Field(4.0, gt=1)  # samples per feature, n / d, for marchenko-pastur
    rho: float = Field(0.5, ge=0, lt=1)  # feature correlation inside a spiked block
    spikes: int = Field(1, ge=1)  # number of equicorrelated blocks of a spiked spectrum
    u_law: ULaw = "gaussian"
    sparsity: float = Field(0.1, gt=0, le=1)  # fraction of u's non-zero coordinates for u_law=sparse
    u_norm: Norm = "gaussian"
    w0_norm: Norm = "gaussian"
    a0: float = 1.0

    def family_problem(self, d: int, seed: int, **override: Any) -> Problem:
        """The problem of dimension ``d`` drawn from seed ``seed`` (``override`` replaces family fields)."""
        f = {**self.family_fields(), **override}
        return Problem.from_spectrum(d, seed=seed, rotate=d <= ROTATE_MAX_D, **f)

    def family_fields(self) -> dict[str, Any]:
        names = ("spectrum", "kappa", "aspect", "rho", "spikes", "u_law", "sparsity", "u_norm")
        return {name: getattr(self, name) for name in names}

    def family_label(self, d: int | None = None) -> str:
        """``"log kappa=100, u gaussian/gaussian, w0 gaussian, a0=1"`` (with ``d=...`` first when given)."""
        shape = {
            "linear": f"kappa={self.kappa:g}",
            "log": f"kappa={self.kappa:g}",
            "marchenko-pastur": f"aspect={self.aspect:g}",
            "spiked": f"rho={self.rho:g}" + (f" x{self.spikes}" if self.spikes > 1 else ""),
        }[self.spectrum]
        law = f"{self.u_law}({self.sparsity:g})" if self.u_law == "sparse" else self.u_law
        head = f"d={d}, " if d is not None else ""
        return f"{head}{self.spectrum} {shape}, u {law}/{self.u_norm}, w0 {self.w0_norm}, a0={self.a0:g}"


class SpectrumConfig(FamilyConfig, OLSConfig):
    """One problem of the family in dimension ``d``; runs start from seeded ``w0`` (``w0_norm``) and ``a0``."""

    d: int = Field(10, ge=2)

    def problem(self, seed: int) -> Problem:
        return self.family_problem(self.d, seed)

    @property
    def family(self) -> str:
        return self.family_label(self.d)

    def start(self, seed: int, norm: Norm | None = None, **extra: Any) -> dict[str, Any]:
        return super().start(seed, norm or self.w0_norm, **extra)

    def bn_start(self, seed: int, norm: Norm | None = None, **extra: Any) -> dict[str, Any]:
        """BNGD's keyword arguments: :meth:`start`, ``compile`` (where the config has it) and ``a0``."""
        extra.setdefault("a0", self.a0)
        return super().bn_start(seed, norm, **extra)  # type: ignore[misc]
