"""The learning-rate window law of BNGD (eps_a = 1) against windows measured on trajectories.

The measured F-window (``steps_window(..., sustain=3)``) is the eps range whose steps to ``gap <= tol gap_0`` stay
within F times the best level sustained over three consecutive grid points (a quarter decade at 12 points per
decade). Why sustained:
on spectra with a few large eigenvalues (spiked) a lone eps can be lucky, its transient passing through
``eps_hat = 1 / lambda*_max`` and wiping out the top modes all at once, converging several times faster than
its neighbours; such an eps is not a usable learning rate (it moves with w0), and the law speaks of the band.
The outer ends of the window are compared with the law's ``[eps_lo / s, s eps_hi]``, median over three w0.
"""

import numpy as np
import pytest

from bnlab.experiments.windows import steps_window
from bnlab.ols import Problem, bngd, initial_weights, theory

TOL = 1e-6
PER_DECADE = 12
MARGIN = 0.6  # decades of grid beyond the predicted ends
SEEDS = (3, 7, 11)
BUDGET = 2.0
# One member of each family, with kappa* between about 3 and 60 at d = 10 .. 1000 so the budget stays small.
FAMILIES = {
    "linear": {"spectrum": "linear", "kappa": 10.0},
    "log": {"spectrum": "log", "kappa": 10.0},
    "marchenko-pastur": {"spectrum": "marchenko-pastur", "aspect": 4.0},
    "spiked": {"spectrum": "spiked", "rho": 0.05, "spikes": 1},
}
# Measured on spiked spectra: ends within 0.3 decade (d = 10 .. 1000, rho = 0.05 .. 0.2), against 0.16 on the
# others. What the law leaves out there (docs/problems.md, "The window law"; d = 1000): the first large step puts
# w's error in the top mode, leaving the slow modes only w0's remnant, so past a ~150-step transient the upper flank
# takes ~0.3x the asymptotic count; its fewest steps (78-98 against the law's 184) set the reference level, which
# raises the lower end by ~0.28 decade and moves the upper one out by ~0.2.
TOLERANCE = {"spiked": 0.35}


def measure(problem: Problem, factor: float) -> dict[str, float]:
    """Median over ``SEEDS`` of the predicted and measured window ends (log10 eps), one batched BNGD call."""
    w0 = initial_weights(problem.d, list(SEEDS))
    law = theory.window_law(problem, w0, 1.0, factor, tol=TOL)
    lo, hi = np.log10(law.lower.min()) - MARGIN, np.log10(law.upper.max()) + MARGIN
    eps = np.logspace(lo, hi, int((hi - lo) * PER_DECADE) + 1)
    # Budget: twice F times the law's fewest steps, log(1/tol) / -log best_rate^2.
    steps = int(BUDGET * factor * np.log(1 / TOL) / (-2 * np.log(law.best_rate.max()))) + 100
    n = len(eps)
    traj = bngd(problem, np.tile(eps, len(SEEDS)), steps, w0=np.repeat(w0, n, axis=0), a0=1.0)  # fused loops
    counts = theory.steps_to_tolerance(traj.steps, traj.excess_loss, TOL).reshape(len(SEEDS), n)
    windows = [steps_window(eps, counts[i], factor, sustain=3) for i in range(len(SEEDS))]
    ends = np.log10([(w.lo, w.hi) for w in windows])
    return {
        "law_lo": float(np.median(np.log10(law.lower))),
        "law_hi": float(np.median(np.log10(law.upper))),
        "lo": float(np.median(ends[:, 0])),
        "hi": float(np.median(ends[:, 1])),
    }


def _problem(family: str, d: int, **extra) -> Problem:
    return Problem.from_spectrum(d, seed=d, rotate=d <= 100, **{**FAMILIES[family], **extra})


@pytest.mark.parametrize("d", [10, 100, 1000])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_window_law_predicts_the_measured_10x_window(family, d):
    m = measure(_problem(family, d), 10.0)
    allowed = TOLERANCE.get(family, 0.25)
    assert m["lo"] == pytest.approx(m["law_lo"], abs=allowed)
    assert m["hi"] == pytest.approx(m["law_hi"], abs=allowed)


@pytest.mark.slow
@pytest.mark.parametrize("factor", [2.0, 10.0])
@pytest.mark.parametrize("u_law", ["gaussian", "sparse"])
@pytest.mark.parametrize("kappa", [10.0, 100.0])
@pytest.mark.parametrize("d", [10, 100, 1000])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_window_law_over_the_family_matrix(family, d, kappa, u_law, factor):
    if family in ("marchenko-pastur", "spiked") and kappa != 10.0:
        pytest.skip("kappa does not apply to this family")
    m = measure(_problem(family, d, kappa=kappa, u_law=u_law), factor)
    # At F = 2 the ends sit at twice the best steps (~50 at kappa* = 10), where the transient's few steps, which
    # the law's asymptotic count leaves out, move them by up to 0.26 decade (linear, d = 10, kappa = 100).
    allowed = TOLERANCE.get(family, 0.25 if factor == 10 else 0.3)
    assert m["lo"] == pytest.approx(m["law_lo"], abs=allowed)
    assert m["hi"] == pytest.approx(m["law_hi"], abs=allowed)


@pytest.mark.parametrize("family", ["linear", "marchenko-pastur"])
def test_window_law_where_the_flanks_meet(family):
    """A standardised target (unit u, a* ~ 1) with a0 = 1 and ||w0||^2 ~ d: eps_lo ~ eps_hi, so eps_hat_inf never
    reaches eps_hat_opt (it peaks at ||u||^2 / (2 G ||w0||)); the best is slower and the F-window wider than
    [eps_lo / F, F eps_hi]. The law keeps ||w0||^2 + eps^2 G^2 together and puts the ends within 0.25 decade
    (with eps_lo and eps_hi alone, Marchenko-Pastur: 0.28 and 0.37 decade too narrow)."""
    problem = _problem(family, 100, u_norm="unit")
    law = theory.window_law(problem, initial_weights(100, list(SEEDS)), 1.0, 10.0, tol=TOL)
    assert np.all(law.eps_hi < 10 * law.eps_lo)  # the flanks meet: this is the regime tested
    m = measure(problem, 10.0)
    assert m["lo"] == pytest.approx(m["law_lo"], abs=0.25)
    assert m["hi"] == pytest.approx(m["law_hi"], abs=0.25)
