"""The synthetic least-squares problem shared by the OLS experiments (docs/claims.md, "The problem"), and the
keyword arguments every OLS run takes from its config: the ``w0`` seed, its normalisation, device and compile."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bnlab.experiments.base import ExperimentConfig
from bnlab.ols import Problem

# Above this d the Haar rotation (O(d^3), minutes at d = 10^4) is skipped: GD and BNGD are equivariant under
# rotations and u, w0 are isotropic, so the measured quantities have the same distribution with H diagonal.
ROTATE_MAX_D = 1000
# w0 is drawn from its own seed, independent of the problem's (which draws Q and u).
W0_SEED_OFFSET = 1000

Spacing = Literal["linear", "log"]
Norm = Literal["gaussian", "unit"]


def w0_seed(seed: int) -> int:
    """The seed of ``w0`` for the problem of seed ``seed``."""
    return W0_SEED_OFFSET + seed


def spectrum_problem(d: int, kappa: float, spacing: Spacing, seed: int, norm: Norm = "gaussian") -> Problem:
    return Problem.from_spectrum(d, kappa, spacing, seed=seed, u_norm=norm, rotate=d <= ROTATE_MAX_D)


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


class SpectrumConfig(OLSConfig):
    """``H = Q diag(lambda) Q^T`` with lambda spaced linearly or geometrically in [1, kappa]; u and w0 standard
    Gaussian (``||.||^2 ~ d``) or scaled to unit norm (``norm`` applies to both)."""

    d: int = Field(10, ge=2)
    kappa: float = Field(100.0, ge=1)
    spacing: Spacing = "log"
    norm: Norm = "gaussian"

    def problem(self, seed: int) -> Problem:
        return spectrum_problem(self.d, self.kappa, self.spacing, seed, self.norm)

    def start(self, seed: int, norm: Norm | None = None, **extra: Any) -> dict[str, Any]:
        return super().start(seed, norm or self.norm, **extra)
