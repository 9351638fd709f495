"""O2 / F1, F6: the asymptotic convergence rate, measured on trajectories against the theory, per eps.

GD's loss gap contracts per step by ``rho(eps)^2`` with ``rho(eps) = max_i |1 - eps lambda_i|``. BNGD's contracts by
``rho*(eps_hat)^2`` with ``rho*(e) = max(|1 - e lambda*_max|, |1 - e lambda*_min|)``, the extreme non-zero
eigenvalues of the effective Hessian ``H* = H - H u u^T H / u^T H u`` and ``eps_hat = eps a^2 / ||w||_H^2`` in
the end of the run (its limit). Both rates are measured by a
log-linear fit of the gap past the transient (``theory.measured_rate``). Rates near 1 say little as ratios, so the
comparison is on the exponent ``-log(rate)`` (the steps per e-fold), whose relative error is what the claims bound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from bnlab.experiments.base import Experiment, RunContext, SeedsConfig, Tables, register
from bnlab.experiments.claims import Claim, below
from bnlab.experiments.plotting import BNGD_COLOUR, GD_COLOUR, THEORY_COLOUR, new_figure, save
from bnlab.experiments.problems import CompiledConfig, SpectrumConfig, w0_seed
from bnlab.ols import bngd, gd, initial_weights, modes, theory

# Fit the rate down to this fraction of the initial gap (not theory's default 1e-12): when the slowest mode
# starts with a tiny share of the error it dominates only late, and both excess-loss formulas keep full
# relative precision far below 1e-12.
_FLOOR = 1e-24
# Where the modal split of the gap is taken (relative to the initial gap). The linearised modes are exact only
# up to the nonlinear coupling, of the order of the gap there: a part holding a smaller share is not resolved.
# A top mode wiped out in the transient to 1e-14 of the gap at 1e-6 (linear kappa = 10, d = 10) took over the
# fitted stretch unforecast from 1e-6 and is forecast exactly from 1e-12, which still precedes the fitted half
# (it starts near sqrt(1e-3 _FLOOR) ~ 1e-13.5 at a steady rate).
_CHECKPOINT = 1e-12


class RateConfig(SpectrumConfig, CompiledConfig, SeedsConfig):
    """Measured asymptotic contraction vs rho(eps)^2 (GD) and rho*(eps_hat_inf)^2 (BNGD), per eps."""

    PROFILES = {
        "quick": {},
        "paper": {"num_eps": 61, "seeds": 5, "steps": 60000, "record_every": 10},
    }

    bngd_eps_min: float = Field(1e-2, gt=0)
    bngd_eps_max: float = Field(1e2, gt=0)
    num_eps: int = Field(13, ge=2)
    steps: int = Field(20000, ge=10)
    record_every: int = Field(5, ge=1)
    seeds: int = Field(2, ge=1)
    eps_a: float = Field(1.0, gt=0)
    tolerance: float = Field(0.01, gt=0)  # allowed relative error of the exponent -log(rate)


def _budget(cfg: RateConfig, slowest_gd: float) -> tuple[int, int]:
    """``(steps, record_every)``: ``cfg.steps``, or as many as GD's slowest run (eps = 0.1 of its edge, gap
    contraction ``slowest_gd`` per step) needs to take its gap to 1e-12 of its start, ``log(1e12) / -log(rate)``:
    1e-3, where the fit begins, then nine decades to fit on (on kappa = 1e4 that is 7e5 steps, not 2e4; the
    defaults' 2e4 cover kappa up to ~300); records thinned to keep ``cfg.steps / cfg.record_every`` of them."""
    needed = int(np.ceil(np.log(1e12) / _exponent(slowest_gd)))
    steps = max(cfg.steps, needed)
    return steps, max(cfg.record_every, steps // max(cfg.steps // cfg.record_every, 1))


def _fittable(runs: pd.DataFrame, steps) -> pd.Series:
    """Runs whose predicted rate takes the gap under 1e-3 of its start (where the fit begins) within half the
    steps run (``theory.measured_rate`` fits the later half of the stretch after it): the others are beyond
    the budget by the theory itself, not evidence against it."""
    return 2 * np.log(1e3) / _exponent(runs.predicted) <= steps


def _exponent(rate):
    return -np.log(np.asarray(rate, dtype=np.float64))


def _chunk(cfg: RateConfig, seed: int) -> pd.DataFrame:
    problem = cfg.problem(seed)
    bn_eps = np.geomspace(cfg.bngd_eps_min, cfg.bngd_eps_max, cfg.num_eps)
    # GD from well inside its stable range to 0.95 of its edge (closer, the two extreme modes contract at nearly
    # equal rates and a log-linear fit cannot separate them within the budget), with the optimal eps included.
    gd_eps = np.sort(
        np.append(np.geomspace(0.1, 0.95, cfg.num_eps) * theory.gd_threshold(problem), theory.gd_optimal_eps(problem))
    )
    steps, every = _budget(cfg, theory.gd_rate(problem, gd_eps.min()) ** 2)
    bn = bngd(problem, bn_eps, steps, eps_a=cfg.eps_a, **cfg.bn_start(seed, record_every=every))
    plain = gd(problem, gd_eps, steps, **cfg.start(seed, record_every=every))
    eff, eff_fit = bn.eff_step[-1], _eff_step_during_fit(bn)
    eff_fit_end = _eff_step_during_fit(bn, _FLOOR)
    modal = _modal_explanation(cfg, problem, seed, bn)
    frames = [
        pd.DataFrame(
            {
                "method": "bngd",
                "eps": bn_eps,
                "eff_step": eff,
                # rho*^2 at eps_hat where the gap is 1e-8 (before the fitted stretch) and where it ends
                "predicted_at_fit": theory.bngd_rate(problem, eff_fit) ** 2,
                "predicted_at_fit_end": theory.bngd_rate(problem, eff_fit_end) ** 2,
                # The theory takes eps_hat fixed: a run whose eps_hat still moves inside the fitted stretch
                # (an overshoot of the edge late in the run) is outside its premise and is counted apart. "Moves":
                # enough to change the predicted exponent by a third of the tolerance (near the edge a tiny drift
                # of eps_hat changes the top mode's rate a lot).
                "settled": np.abs(
                    _exponent(theory.bngd_rate(problem, eff_fit) ** 2) / _exponent(theory.bngd_rate(problem, eff) ** 2)
                    - 1
                )
                < cfg.tolerance / 3,
                "measured": theory.measured_rate(bn.steps, bn.excess_loss, floor=_FLOOR),
                "predicted": theory.bngd_rate(problem, eff) ** 2,
                "diverged": bn.diverged,
                "steps": steps,
                **modal,
            }
        ),
        pd.DataFrame(
            {
                "method": "gd",
                "eps": gd_eps,
                "eff_step": gd_eps,
                "settled": True,
                "measured": theory.measured_rate(plain.steps, plain.excess_loss, floor=_FLOOR),
                "predicted": theory.gd_rate(problem, gd_eps) ** 2,
                "diverged": plain.diverged,
                "steps": steps,
                **_gd_modal_explanation(cfg, problem, seed, plain),
            }
        ),
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame["exponent_rel_error"] = np.abs(_exponent(frame.measured) / _exponent(frame.predicted) - 1)
    frame["gd_optimal_rate"] = theory.gd_optimal_rate(problem) ** 2
    frame["bngd_optimal_rate"] = theory.bngd_optimal_rate(problem) ** 2
    return frame


def _modal_explanation(cfg: RateConfig, problem, seed: int, bn) -> dict[str, np.ndarray]:
    """Per BNGD run, the gap split over H*'s modes at ``_CHECKPOINT`` of its start (``bnlab.ols.modes``):
    ``modal_rate``, the rate the same fit gives on the gap forecast from that split (each part contracting at
    its own rate: ``(1 - eps_hat mu_j)^2``, the scale part ``(1 - eps_a)^2``), and the slowest part still
    populated at the stretch's end (``mode``: 0 is lambda*_max, the last lambda*_min, -1 the scale part), with
    its ``mu`` and ``share`` of the gap there. NaN where the stretch never starts or d is beyond the dense
    decomposition."""
    B = len(bn.eps)
    out = {k: np.full(B, np.nan) for k in ("modal_rate", "mode", "mode_mu", "mode_share", "mode_rate")}
    rel = bn.excess_loss / bn.excess_loss[0]
    started = (rel <= 1e-3).any(axis=0)
    if problem.d > modes.MAX_D or not started.any():
        return out
    # measured_rate fits the later half of the stretch from 1e-3 of the start to _FLOOR: checkpoint at
    # _CHECKPOINT, deep enough for the linearised modes, early enough to precede the fitted half; recorded gap
    # before it.
    deep = rel <= _CHECKPOINT
    start = np.where(deep.any(axis=0), np.argmax(deep, axis=0), np.argmax(rel <= 1e-3, axis=0))
    reached = rel <= _FLOOR
    stop = np.where(reached.any(axis=0), np.argmax(reached, axis=0), len(rel) - 1)
    at = np.unique(bn.steps[start])
    a, w = modes.bngd_checkpoints(problem, bn.eps, at, eps_a=bn.eps_a, **cfg.bn_start(seed))
    pick = np.searchsorted(at, bn.steps[start])
    runs = np.arange(B)
    split = modes.modal_gap(problem, a[pick, runs], w[pick, runs])
    eff = bn.eff_step[-1]
    ahead = np.maximum(bn.steps[None, :] - bn.steps[start][:, None], 0)  # (B, T); before the checkpoint: unused
    forecast = modes.modal_forecast(split, eff, bn.eps_a, ahead)
    synthetic = np.where(np.arange(len(rel))[:, None] < start, bn.excess_loss, forecast.T)
    slowest = modes.modal_rate(split, eff, bn.eps_a, horizon=bn.steps[stop] - bn.steps[start])
    out["modal_rate"] = np.where(started, theory.measured_rate(bn.steps, synthetic, floor=_FLOOR), np.nan)
    out["mode"] = np.where(started, slowest.mode, np.nan)
    out["mode_mu"] = np.where(started, slowest.mu, np.nan)
    out["mode_share"] = np.where(started, slowest.share, np.nan)
    out["mode_rate"] = np.where(started, slowest.rate, np.nan)
    return out


def _gd_modal_explanation(cfg: RateConfig, problem, seed: int, plain) -> dict[str, np.ndarray]:
    """Per GD run, what :func:`_modal_explanation` gives BNGD, from GD's exact modal split
    (``modes.gd_modal_gap``): GD is linear, so the gap is ``sum_i lambda_i v_i^2 (1 - eps lambda_i)^(2k) / 2``
    with ``v = Q^T (w0 - u)`` from the start, no checkpoint needed; ``modal_rate`` is that forecast fitted as
    the measurement is, ``mode`` the slowest eigenvalue still populated at the stretch's end (index into
    lambda, descending), its ``mu`` (= lambda) and ``share`` of the gap there. A mode whose coordinate of
    ``w0 - u`` is zero never sets the tail; near-equal eigenvalues next to the slowest one compete over the
    finite stretch the rate is fitted on."""
    B = len(plain.eps)
    w0 = np.broadcast_to(initial_weights(problem.d, [w0_seed(seed)], cfg.w0_norm), (B, problem.d))
    split = modes.gd_modal_gap(problem, w0)
    forecast = modes.modal_forecast(split, plain.eps, 1.0, plain.steps)  # (B, T), exact up to round-off
    rel = plain.excess_loss / plain.excess_loss[0]
    reached = rel <= _FLOOR
    stop = np.where(reached.any(axis=0), np.argmax(reached, axis=0), len(rel) - 1)
    slowest = modes.modal_rate(split, plain.eps, 1.0, horizon=plain.steps[stop])
    return {
        "modal_rate": theory.measured_rate(plain.steps, forecast.T, floor=_FLOOR),
        "mode": slowest.mode.astype(np.float64),
        "mode_mu": slowest.mu,
        "mode_share": slowest.share,
        "mode_rate": slowest.rate,
    }


def _eff_step_during_fit(traj, at_gap: float = 1e-8) -> np.ndarray:
    """``eps_hat`` where the gap first falls to ``at_gap`` of its start, inside the stretch the rate is fitted on
    (compared with the last step's value to tell whether ``eps_hat`` had settled)."""
    rel = traj.excess_loss / traj.excess_loss[0]
    reached = rel <= at_gap
    index = np.where(reached.any(axis=0), np.argmax(reached, axis=0), len(rel) - 1)
    return traj.eff_step[index, np.arange(rel.shape[1])]


def run(cfg: RateConfig, ctx: RunContext) -> None:
    ctx.store.write_table("rates", ctx.per_chunk(cfg, _chunk, seed=range(cfg.seeds)))


def _rate_claim(cfg: RateConfig, row: pd.Series, id: str, claim: str, quantity: str, detail: str, also=True) -> Claim:
    """A measured contraction beside its prediction; the check is on the exponent -log(rate) (see above)."""
    error = row.exponent_rel_error
    return Claim(
        id=id,
        claim=claim,
        quantity=quantity,
        predicted=row.predicted,
        measured=row.measured,
        holds=bool(also and error <= cfg.tolerance),
        detail=f"relative error of -log(rate) {error:.2e} (allowed {cfg.tolerance:g}){detail}",
    )


def summarise(cfg: RateConfig, tables: Tables) -> list[Claim]:
    rates = tables["rates"]
    claims = []
    for method, name, fact in (("gd", "GD", "F1"), ("bngd", "BNGD", "F6")):
        sub = rates[rates.method == method]
        moving = int((~sub.settled).sum())
        sub = sub[sub.settled]
        # rho^2 and rho*^2 speak of the extreme modes: runs whose populated modes say otherwise go to the
        # deviations claim below.
        extreme = ~_off_rho_star(cfg, sub)
        others = (
            f"; {int((~extreme).sum())} run(s) whose tail is set by other modes (rate.{method}-deviations-explained)"
        )
        sub = sub[extreme]
        fittable = _fittable(sub, sub.steps)
        beyond = f"; {int((~fittable).sum())} run(s) whose predicted rate is too slow to reach the fit within the "
        beyond += "budget"
        measured = sub[np.isfinite(sub.measured)]
        fitted_all = bool(np.isfinite(sub.measured[fittable]).all())
        if measured.empty:
            claims.append(
                Claim(
                    id=f"rate.{method}-linear",
                    claim=f"{name} converges linearly ({fact})",
                    quantity=f"{name} per-step contraction",
                    predicted=None,
                    measured=None,
                    holds=not fittable.any(),
                    detail=f"no run converged far enough to fit{beyond}{others}",
                )
            )
            continue
        worst = measured.loc[measured.exponent_rel_error.idxmax()]
        formula = "rho(eps)^2" if method == "gd" else "rho*(eps_hat)^2"
        claims.append(
            _rate_claim(
                cfg,
                worst,
                id=f"rate.{method}-linear",
                claim=f"{name} converges linearly, loss gap contracting by {formula} per step ({fact})",
                quantity=f"{name} per-step contraction at eps={worst.eps:.3g} (worst of {len(measured)} runs)",
                also=fitted_all,
                detail=f" at worst, median {measured.exponent_rel_error.median():.2e}; {len(measured)}/{len(sub)} "
                f"runs converged far enough to fit; {moving} run(s) left out whose eps_hat still moved in the "
                f"fitted stretch (a late overshoot of the edge, outside the fixed-eps_hat premise){others}{beyond}",
            )
        )
    claims.append(_deviations_explained(cfg, rates[(rates.method == "gd") & rates.settled], "gd"))
    claims.append(_deviations_explained(cfg, rates[(rates.method == "bngd") & rates.settled], "bngd"))
    # A few landmark eps of BNGD, each prediction beside its measurement (seed 0).
    bn0 = rates[(rates.method == "bngd") & (rates.seed == rates.seed.min())]
    for label, target in (("small", 0.01), ("unit", 1.0), ("large", 100.0)):
        row = bn0.iloc[int(np.argmin(np.abs(np.log(bn0.eps / target))))]
        if abs(np.log10(row.eps / target)) < 0.2 and np.isfinite(row.measured):
            claims.append(_landmark_claim(cfg, row, label))
    return claims


def _landmark_claim(cfg: RateConfig, row: pd.Series, label: str) -> Claim:
    """BNGD's rate at one eps, one of two checks under two ids: ``rate.bngd-at-{label}-eps`` against
    rho*(eps_hat_inf)^2 where the extreme modes set the tail, or ``rate.bngd-at-{label}-eps-modes`` against the
    forecast of the modes populated where those put it off rho*^2 (``_off_rho_star``: competing modes, a crushed
    top mode), as ``rate.bngd-deviations-explained`` does for every run."""
    off = bool(np.isfinite(row.modal_rate) and _off_rho_star(cfg, row))
    predicted = float(row.modal_rate if off else row.predicted)
    error = abs(_exponent(row.measured) / _exponent(predicted) - 1)
    within = error <= cfg.tolerance
    if not row.settled:  # eps_hat moved over the fitted stretch, from its value before it to its end and on: the
        # contraction lies between rho*^2 at those (widened by the tolerance).
        ends = _exponent(np.array([row.predicted_at_fit, row.predicted_at_fit_end, row.predicted]))
        within = within or ends.min() * (1 - cfg.tolerance) <= _exponent(row.measured) <= ends.max() * (
            1 + cfg.tolerance
        )
    why = (
        f"; its modes put it off rho*^2 = {row.predicted:.6f} (slowest populated mode mu={row.mode_mu:.4g}, "
        f"{row.mode_share:.0%} of the gap; competing modes or a crushed top mode): compared with their forecast"
        if off
        else ""
    )
    moving = (
        ""
        if row.settled
        else f"; eps_hat still moved in the fitted stretch: held to rho*^2 between {row.predicted_at_fit:.6f} (gap "
        f"1e-8), {row.predicted_at_fit_end:.6f} (the stretch's end) and {row.predicted:.6f} (the run's end)"
    )
    return Claim(
        id=f"rate.bngd-at-{label}-eps" + ("-modes" if off else ""),
        claim=f"BNGD rate at eps = {row.eps:.3g}: "
        + ("the rate of the modes populated, which put it off rho*^2 (F6)" if off else "rho*(eps_hat_inf)^2 (F6)"),
        quantity=f"contraction per step, eps_hat_inf = {row.eff_step:.5g}",
        predicted=predicted,
        measured=row.measured,
        holds=bool(within),
        detail=f"relative error of -log(rate) {error:.2e} (allowed {cfg.tolerance:g}){why}{moving}",
    )


def _off_rho_star(cfg: RateConfig, runs: pd.DataFrame | pd.Series) -> pd.Series | bool:
    """Runs whose modal forecast (the modes actually populated, fitted as the measurement is) is off rho^2
    (GD) or rho*^2 (BNGD) by more than the tolerance on the exponent: a crushed extreme mode, competing modes,
    or the scale part. BNGD's is decided from the state where the gap fell to _CHECKPOINT, GD's from w0 (exactly),
    never from the measured rate."""
    return np.abs(_exponent(runs.modal_rate) / _exponent(runs.predicted) - 1) > cfg.tolerance


_MODE_NAMES = {
    "gd": ("GD", "rho^2", "Every GD rate off rho^2 is the rate of the modes of H populated in w0 - u"),
    "bngd": (
        "BNGD",
        "rho*^2",
        "Every BNGD rate off rho*^2 is the rate of the modes of H* still populated (and of the scale part)",
    ),
}


def _deviations_explained(cfg: RateConfig, runs: pd.DataFrame, method: str) -> Claim:
    """Every settled run whose modes put its rate off rho^2 / rho*^2 by more than the tolerance (on the exponent)
    is measured at the rate of those modes: the fit of the modal forecast matches the measurement."""
    name, law, claim = _MODE_NAMES[method]
    off = runs[np.isfinite(runs.measured) & _off_rho_star(cfg, runs)]
    error = np.abs(_exponent(off.modal_rate) / _exponent(off.measured) - 1)
    top = "lambda*_max mode" if method == "bngd" else "lambda_max mode"
    names = {0.0: top, -1.0: "scale part (a - p)^2"}
    lines = [
        f"eps={r.eps:.3g} seed {r.seed}: measured {r.measured:.6f}, {law} {r.predicted:.6f}, modes {r.modal_rate:.6f}"
        f" (slowest populated: {names.get(r.mode, f'mode mu={r.mode_mu:.4g}')}, {r.mode_share:.0%} of the gap)"
        for r in off.itertuples()
    ]
    worst = float(error.max()) if len(off) else 0.0
    return below(
        id=f"rate.{method}-deviations-explained",
        claim=claim,
        quantity=f"largest relative error of -log(rate), modal forecast vs measured, over the {len(off)} {name} "
        f"run(s) whose modes put them off {law} by more than {cfg.tolerance:g}",
        measured=worst if np.isfinite(worst) else np.inf,
        bound=cfg.tolerance,
        detail="; ".join(lines) or f"no run is off {law} by more than the tolerance",
    )


def plot(cfg: RateConfig, tables: Tables, folder: Path) -> list[Path]:
    rates = tables["rates"]
    fig, (ax, ax_err) = new_figure(ncols=2, width=5.0, height=3.8)
    for method, colour, name in (("gd", GD_COLOUR, "GD"), ("bngd", BNGD_COLOUR, "BNGD")):
        sub = rates[rates.method == method]
        ax.plot(sub.eps, _exponent(sub.measured), "o", ms=4, color=colour, label=f"{name} measured", alpha=0.8)
        pred = sub.groupby("eps").predicted.median()
        ax.plot(pred.index, _exponent(pred), "-", color=colour, lw=1, alpha=0.6)
        ax_err.plot(sub.eps, sub.exponent_rel_error.clip(lower=1e-16), "o", ms=4, color=colour, label=name)
    ax.plot([], [], "-", color=THEORY_COLOUR, lw=1, label="theory: rho^2, rho*(eps_hat)^2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate eps")
    ax.set_ylabel("-log(contraction per step)")
    ax.set_title(f"Asymptotic rate, {cfg.family}")
    ax.legend(fontsize=8)
    ax_err.axhline(cfg.tolerance, color=THEORY_COLOUR, ls="--", lw=1, label=f"tolerance {cfg.tolerance:g}")
    ax_err.set_xscale("log")
    ax_err.set_yscale("log")
    ax_err.set_xlabel("learning rate eps")
    ax_err.set_ylabel("relative error of -log(rate)")
    ax_err.set_title("measured vs predicted")
    ax_err.legend(fontsize=8)
    return save(fig, folder, "rate")


register(Experiment("rate", "Convergence rate", ("F1", "F6", "O2"), RateConfig, run, summarise, plot))
