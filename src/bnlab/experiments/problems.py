"""The synthetic least-squares problem shared by the OLS experiments (SPEC section 3)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bnlab.experiments.base import ExperimentConfig
from bnlab.ols import Problem

# Above this d the Haar rotation (O(d^3), minutes at d = 10^4) is skipped: GD and BNGD are equivariant under
# rotations and u, w0 are isotropic, so the measured quantities have the same distribution with H diagonal.
ROTATE_MAX_D = 1000
# w0 is drawn from its own seed, independent of the problem's (which draws Q and u).
W0_SEED_OFFSET = 1000


class SpectrumConfig(ExperimentConfig):
    """``H = Q diag(lambda) Q^T`` with lambda spaced linearly or geometrically in [1, kappa]; u and w0 standard
    Gaussian (``||.||^2 ~ d``) or scaled to unit norm (``norm`` applies to both)."""

    d: int = Field(10, ge=2)
    kappa: float = Field(100.0, ge=1)
    spacing: Literal["linear", "log"] = "log"
    norm: Literal["gaussian", "unit"] = "gaussian"

    def problem(self, seed: int) -> Problem:
        return Problem.from_spectrum(
            self.d, self.kappa, self.spacing, seed=seed, u_norm=self.norm, rotate=self.d <= ROTATE_MAX_D
        )

    @staticmethod
    def w0_seed(seed: int) -> int:
        return W0_SEED_OFFSET + seed
