"""O6 / F8: robustness to the dimension, resolved by its mechanism (docs/problems.md, "The window law").

The paper says GD's good range of learning rates does not depend on d while BNGD's widens with it ("the higher
the better"). The window law of BNGD with eps_a = 1 (``theory.window_law``) says why and when: the F-window is
``[eps_lo / F, F eps_hi]`` with ``eps_lo = eps_hat_opt ||w0||^2 / ||u||^2`` and
``eps_hi = ||u||^2 / (eps_hat_opt ||grad_w J(a0, w0)||^2)``, of width about
``2 log10 F + log10[(a*/a0)^2 (lambda*_max + lambda*_min)^2 / (4 m2)]`` decades for isotropic u and w0
(``a* = ||u||_H``, ``m2`` the mean of lambda^2). ``||w0||`` cancels: it shifts the window only. So the window
widens with d exactly when ``a*/a0`` or ``(lambda*_max + lambda*_min)^2 / m2`` grows with d. Three cases:

- (a) ``fixed``: ``a*/a0`` fixed: a standardised target (unit-norm u, so ``a* = ||u||_H ~ 1``) and ``a0``
  fixed, with ``w0`` as configured (Gaussian: ``||w0||^2 ~ d``, which only shifts the window). Here
  ``eps_hi ~ eps_lo``: the flanks meet, ``eps_hat_inf`` peaks under ``eps_hat_opt`` and the law's ends are the
  roots of ``eps_hat_inf(eps) = eps_hat_F`` with ``||w0||^2 + eps^2 G^2`` kept together (``theory.window_law``);
- (b) ``raw``: a raw target ``y = x^T u`` with O(1) coefficients (``||u||^2 ~ d``) and ``a0`` fixed, the natural
  reading of the paper's setting: ``(a*/a0)^2 ~ d``, about one decade of window per decade of d;
- (c) ``spiked``: unit-norm u and w0 on a spiked (equicorrelated) spectrum, where ``lambda_max^2 / m2`` grows
  like d. Its kappa* grows like ``rho d`` and the steps with it, so it runs over its own ``spiked_dims``.

Each case measures BNGD's and GD's 2x and 10x windows (steps to ``tol``) per d on an eps grid built from the
law's predicted window with a margin (the best level being the one three neighbouring eps all reach: a lone
lucky eps on a spiked spectrum is no usable learning rate, ``windows.lr_window``), puts the law's ends beside
every measured window, and compares the slopes (decades of window per decade of d). GD's window is set by
its spectrum alone (F1) and does not move with d where
the spectrum does not. For d above 1000 the problem is built in H's eigenbasis (Q = I): the dynamics are
rotation-equivariant and u, w0 isotropic, so the measured quantities have the same distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from bnlab.experiments.base import Experiment, RunContext, SeedsConfig, Tables, register
from bnlab.experiments.claims import Claim, below, close_to, fmt
from bnlab.experiments.plotting import BNGD_COLOUR, GD_COLOUR, THEORY_COLOUR, new_figure, save
from bnlab.experiments.problems import CompiledConfig, FamilyConfig, w0_seed
from bnlab.experiments.steps_to_tol import FACTORS, gd_predicted_width, widths_table
from bnlab.ols import Problem, bngd, gd, initial_weights, theory

Case = Literal["fixed", "raw", "spiked"]
CASES: dict[str, str] = {
    "fixed": "(a) a*/a0 fixed (standardised target: unit u, a0 = 1)",
    "raw": "(b) raw target, a*/a0 ~ sqrt(d)",
    "spiked": "(c) spiked spectrum, unit u and w0",
}
# The law's ends are within 0.25 decade of the measured ones on linear, log, Marchenko-Pastur and spiked spectra
# (tests/ols/test_window_law.py); beyond that, by as much as the law's count of the fewest steps is off (the claims
# allow that term). Case (c)'s blocks (rho = 0.5, 4 spikes) put the fewest steps on the plateau between the flanks,
# where eps_hat settles just under the edge and the top modes, at their edge, hold the tail: measured 1.4-2x the
# law's count there (52 vs 36 at d = 30, 524 vs 255 at d = 300), the ends ~0.2 decade inside the measured ones.
LAW_TOLERANCE = {"fixed": 0.25, "raw": 0.25, "spiked": 0.25}


class DimensionConfig(FamilyConfig, CompiledConfig, SeedsConfig):
    """BNGD's learning-rate windows vs d in three cases (a*/a0 fixed, raw target, spiked spectrum), beside the
    window law and GD.

    The family fields (``spectrum``, ``kappa``, ``u_law``, ``u_norm``, ``w0_norm``, ``a0`` ...) define case (b);
    case (a) takes them with a unit-norm u; case (c) the spiked spectrum with correlation ``spiked_rho`` and
    unit-norm u and w0.
    """

    PROFILES = {
        "quick": {},
        "paper": {"dims": [10, 100, 1000, 10000], "spiked_dims": [30, 100, 300, 1000], "seeds": 3},
    }

    dims: tuple[int, ...] = (10, 100, 1000)
    cases: tuple[Case, ...] = ("fixed", "raw", "spiked")
    kappa: float = Field(10.0, ge=1)
    seeds: int = Field(3, ge=1)
    spiked_rho: float = Field(0.5, gt=0, lt=1)  # case (c): correlation inside each block
    spiked_spikes: int = Field(4, ge=1)  # case (c): blocks; lambda = 1 - rho + rho d / spikes (x spikes), 1 - rho
    # Case (c) from d = 30: at d = 10 the blocks hold 2-3 features and H is near isotropic (the law is poorest
    # there, up to 0.9 decade); kappa* grows like rho d / spikes, and the steps with it.
    spiked_dims: tuple[int, ...] = (30, 100, 300)
    per_decade: int = Field(6, ge=2)  # eps grid points per decade
    margin: float = Field(0.75, gt=0)  # decades of grid beyond the law's predicted 10x window
    tol: float = Field(1e-6, gt=0, lt=1)
    budget: float = Field(2.0, ge=1)  # steps = budget x 10 x the asymptotic steps at the best rate
    # Case (c): its band's steps run 2-3x the best rate's (the top modes sit at their edge), so more budget.
    spiked_budget: float = Field(5.0, ge=1)
    max_steps: int = Field(100_000, ge=10)  # a cap (large kappa*): the windows' ends are then cut by the budget
    # |measured slope - law's slope| allowed (decades per decade); also the flat band: within it, "does not widen"
    slope_atol: float = Field(0.2, gt=0)
    # Case (c): the law's ends are within ~0.26 decade there, and both move, so over 1-1.5 decades of d its slope
    # can be off by ~0.45 (measured: 0.1-0.4 at 2-3 seeds).
    spiked_slope_atol: float = Field(0.45, gt=0)
    gd_spread_decades: float = Field(0.25, gt=0)  # "no effect": GD's 10x window moves less than this over d


def case_problem(cfg: DimensionConfig, case: str, d: int, seed: int) -> tuple[Problem, np.ndarray, float]:
    """``(problem, w0, a0)`` of a case in dimension d."""
    if case == "spiked":
        spiked = {"spectrum": "spiked", "rho": cfg.spiked_rho, "spikes": cfg.spiked_spikes, "u_norm": "unit"}
        problem = cfg.family_problem(d, seed, **spiked)
        return problem, initial_weights(d, [w0_seed(seed)], "unit")[0], cfg.a0
    problem = cfg.family_problem(d, seed, **({"u_norm": "unit"} if case == "fixed" else {}))
    return problem, initial_weights(d, [w0_seed(seed)], cfg.w0_norm)[0], cfg.a0


def _budget(cfg: DimensionConfig, rate: float, case: str) -> int:
    """Steps enough for ``budget`` x 10 x ``log(1/tol) / -log rate^2`` (the 10x window's ends and beyond)."""
    budget = cfg.spiked_budget if case == "spiked" else cfg.budget
    return min(int(budget * 10 * np.log(1 / cfg.tol) / (-2 * np.log(max(rate, 1e-12)))) + 100, cfg.max_steps)


def _chunk(cfg: DimensionConfig, case: str, d: int, seed: int) -> pd.DataFrame:
    problem, w0, a0 = case_problem(cfg, case, d, seed)
    # The windows are measured from the best level 3 neighbouring eps hold (2 grid steps): the law's alike.
    sustain = 2 / cfg.per_decade
    laws = {f: theory.window_law(problem, w0, a0, f, tol=cfg.tol, sustain=sustain) for f in FACTORS}
    wide = laws[max(FACTORS)]
    lo, hi = np.log10(wide.lower) - cfg.margin, np.log10(wide.upper) + cfg.margin
    bn_eps = np.logspace(lo, hi, int(np.ceil((hi - lo) * cfg.per_decade)) + 1)
    # GD: from far below its best eps to past its cliff at 2 / lambda_max.
    edge = np.log10(theory.gd_threshold(problem))
    gd_eps = np.logspace(edge - 3.5, edge + 0.5, 4 * cfg.per_decade + 1)
    start = {"w0": w0, "record_every": 1, "device": cfg.device}
    # The budget from the law's best rate: slower than rho*(eps_hat_opt) where the flanks meet (case (a)).
    bn = bngd(problem, bn_eps, _budget(cfg, float(wide.best_rate), case), a0=a0, compile=cfg.compile, **start)
    plain = gd(problem, gd_eps, _budget(cfg, theory.gd_optimal_rate(problem), case), **start)
    frames = [
        pd.DataFrame(
            {"method": m, "eps": eps, "steps_to_tol": theory.steps_to_tolerance(t.steps, t.excess_loss, cfg.tol)}
        )
        for m, eps, t in (("bngd", bn_eps, bn), ("gd", gd_eps, plain))
    ]
    # BNGD's eps_hat_inf = eps ||u||^2 / ||w_inf||^2 at the end of the budget, beside the law's curve
    # eps ||u||^2 / (||w0||^2 + eps^2 G^2) = eps_hat_opt eps / (eps_lo + eps^2 / eps_hi) (what _count_drift reads).
    eh_opt = theory.bngd_optimal_eff_step(problem)
    frames[0]["eff_step_inf"] = bn_eps * float(np.sum(problem.u_eig**2)) / bn.w_norm[-1] ** 2
    frames[0]["eff_step_law"] = eh_opt * bn_eps / (wide.eps_lo + bn_eps**2 / wide.eps_hi)
    law = {f"law_{end}_{f:g}x": float(getattr(law, end)) for f, law in laws.items() for end in ("lower", "upper")}
    return pd.concat(frames, ignore_index=True).assign(
        gd_width_10x_predicted=gd_predicted_width(problem, 10.0),
        a_star_over_a0=float(np.sqrt(problem.u_norm_H2) / abs(a0)),
        kappa_star=theory.kappa_star(problem),
        law_best_steps=float(wide.best_steps),
        **law,
    )


_PER_RUN = ("gd_width_10x_predicted", "a_star_over_a0", "kappa_star")


def run(cfg: DimensionConfig, ctx: RunContext) -> None:
    plain = [c for c in cfg.cases if c != "spiked"]
    spiked = [c for c in cfg.cases if c == "spiked"]
    steps = pd.concat(
        [
            ctx.per_chunk(cfg, _chunk, case=cases, d=dims, seed=range(cfg.seeds))
            for cases, dims in ((plain, cfg.dims), (spiked, cfg.spiked_dims))
            if cases
        ],
        ignore_index=True,
    )
    predicted = [c for c in steps if c.startswith("law_") or c in _PER_RUN]
    ctx.store.write_table("steps", steps.drop(columns=predicted))
    # GD's best eps sits next to its cliff and has no lucky neighbours: its window is from its fewest steps.
    windows = pd.concat(
        [widths_table(steps[steps.method == m], ["case", "d"], sustain=n) for m, n in (("bngd", 3), ("gd", 1))],
        ignore_index=True,
    )
    windows = windows.join(steps.groupby(["case", "d", "seed"])[predicted].first(), on=["case", "d", "seed"])
    for f in FACTORS:
        windows[f"law_width_{f:g}x"] = np.log10(windows[f"law_upper_{f:g}x"] / windows[f"law_lower_{f:g}x"])
    ctx.store.write_table("windows", windows)


def slope(d, width) -> float:
    """Least-squares slope of the window width (decades) against log10 d."""
    return float(np.polyfit(np.log10(np.asarray(d, dtype=float)), np.asarray(width, dtype=float), 1)[0])


def case_table(windows: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds per (case, method, d) of the measured and predicted windows."""
    cols = [c for c in windows if c.startswith(("width_", "span_", "lo_", "hi_", "law_"))]
    cols += ["gd_width_10x_predicted", "kappa_star", "level_steps"]
    return windows.groupby(["case", "method", "d"])[cols].median()


def summarise(cfg: DimensionConfig, tables: Tables) -> list[Claim]:
    med = case_table(tables["windows"])
    claims: list[Claim] = []
    for case in cfg.cases:
        if (case, "bngd") not in med.index.droplevel("d"):
            continue
        bn, plain = med.loc[(case, "bngd")], med.loc[(case, "gd")]
        ds = bn.index.to_numpy()
        # The law places the window's outer ends: its extent is the span (the width, the runs' total length, is
        # less where the ragged band has bumps above F times the best, as on linear spectra; given beside).
        measured, law = slope(ds, bn.span_10x), slope(ds, bn.law_width_10x)
        pairs = zip(ds, bn.span_10x, bn.law_width_10x, bn.width_10x, strict=True)
        by_d = ", ".join(f"d={d}: {m:.2f} (law {p:.2f}, width {w:.2f})" for d, m, p, w in pairs)
        two = f"2x slope {slope(ds, bn.span_2x):.2f} (law {slope(ds, bn.law_width_2x):.2f})"
        label = CASES[case]
        capped = _budget(cfg, (bn.kappa_star.max() - 1) / (bn.kappa_star.max() + 1), case) >= cfg.max_steps
        if capped:
            two += f"; the steps were capped at {cfg.max_steps} (kappa* up to {bn.kappa_star.max():.3g}): windows cut"
        # The law's count of the fewest steps is off by a factor r_d (transient, modes' shares: see law-ends), which
        # moves both ends out by up to log10 r_d; its trend over d is allowed on top of the sampling tolerance.
        level = 2 * np.log10(bn.level_steps / bn.law_best_steps)
        level_slope = abs(slope(ds, level))
        atol = (cfg.spiked_slope_atol if case == "spiked" else cfg.slope_atol) + level_slope
        claims.append(
            close_to(
                id=f"dimension.law-slope.{case}",
                claim=f"BNGD's 10x-window grows with d as the window law predicts, up to the trend of its count of "
                f"the fewest steps, {label}",
                quantity="slope of the 10x-window span vs log10 d (decades per decade)",
                predicted=law,
                measured=measured,
                atol=atol,
                detail=f"median over {cfg.seeds} seeds, by d: {by_d}; {two}; 2 log10(fewest steps measured / law's) "
                f"by d: {fmt(round(v, 2) for v in level)}, slope {level_slope:.2f} allowed on top of "
                f"{atol - level_slope:g}",
            )
        )
        # The law counts the steps at the asymptotic rate from step 0, so its fewest steps (the level the window is
        # measured from) are off by the transient and by the modes' shares of the gap; on the flanks steps go like
        # eps^-1 (lower) and eps (upper), so a level off by a factor r moves each end by up to log10 r decades.
        level = np.abs(np.log10(bn.level_steps / bn.law_best_steps)).to_numpy()
        ends = np.maximum(
            np.abs(np.log10(bn.lo_10x / bn.law_lower_10x)), np.abs(np.log10(bn.hi_10x / bn.law_upper_10x))
        ).to_numpy()
        runs = tables["windows"][(tables["windows"].case == case) & (tables["windows"].method == "bngd")]
        off = ds[ends - level > LAW_TOLERANCE[case]]
        claims.append(
            below(
                id=f"dimension.law-ends.{case}",
                claim=f"The window law puts BNGD's 10x-window where it is measured, up to its count of the fewest "
                f"steps, {label}",
                quantity="largest |log10(measured end / law's end)| - |log10(measured fewest steps / law's)| over d "
                "(decades)",
                measured=float(np.max(ends - level)),
                bound=LAW_TOLERANCE[case],
                detail="ends (log10 eps) measured vs law, fewest steps measured vs law: "
                + "; ".join(
                    f"d={d}: [{np.log10(r.lo_10x):.2f}, {np.log10(r.hi_10x):.2f}] vs "
                    f"[{np.log10(r.law_lower_10x):.2f}, {np.log10(r.law_upper_10x):.2f}], "
                    f"{r.level_steps:.0f} vs {r.law_best_steps:.0f}"
                    for d, r in bn.iterrows()
                )
                + _count_drift(runs[runs.d.isin(off)], tables["steps"]),
            )
        )
        claims.append(_higher_is_better(cfg, case, measured, law, _transient_bands(runs)))
        spread = float(plain.width_10x.max() - plain.width_10x.min())
        claims.append(
            close_to(
                id=f"dimension.gd-flat.{case}",
                claim=f"GD's 10x-window does not widen with d (F1), {label}",
                quantity="GD 10x-window (decades, mean over d) vs its prediction from rho(eps)",
                predicted=float(plain.gd_width_10x_predicted.mean()),
                measured=float(plain.width_10x.mean()),
                atol=cfg.gd_spread_decades,
                also=case == "spiked" or spread <= cfg.gd_spread_decades,
                detail=f"spread over d {spread:.2f} decades (allowed {cfg.gd_spread_decades:g} where the spectrum "
                f"is fixed); by d: {fmt(round(w, 2) for w in plain.width_10x)}",
            )
        )
    return claims


def _transient_bands(runs: pd.DataFrame) -> str:
    """The runs (d, seed) whose 10x-window is a transient band, not the law's: fewest steps under a tenth of the
    law's count at the best rate, and a span more than a decade short of the law's width. There the transient
    takes the gap under tol at the best eps while the slowest modes of H* (H's isolated lowest eigenvalue: a linear
    spectrum at small d and large kappa) are left holding under tol of it, and its neighbours, which leave more,
    need thousands of steps: the window is that band (as ``lr-robustness.bngd-*-wider`` names it). Measured on
    linear kappa = 1e4, sparse u, case (a), d = 10: fewest steps 26 and 36 where the law counts 33020 and 32374,
    spans 3.43 and 0.81 decades against the law's 5.56 and 5.63, while d = 100, 1000 match the law (5.56, 5.52)."""
    band = runs[(10 * runs.level_steps < runs.law_best_steps) & (runs.span_10x < runs.law_width_10x - 1)]
    if band.empty:
        return ""
    listed = "; ".join(
        f"d={int(r.d)} seed {int(r.seed)}: fewest {r.level_steps:.0f} steps vs the law's {r.law_best_steps:.0f}, "
        f"span {r.span_10x:.2f} vs {r.law_width_10x:.2f}"
        for r in band.itertuples()
    )
    return (
        f"; windows that are transient bands ({listed}): the transient reaches tol with the slowest modes of H* "
        "left under it, so the window is that band's and the slope over d is not the law's there"
    )


def _count_drift(runs: pd.DataFrame, steps: pd.DataFrame, factor: float = 10.0) -> str:
    """Per run (d, seed) at the d where the law's ends are off: its count of the steps, measured / counted, at its
    fewest (``r_best``) and at its ends (``r_end``: the measured steps there, read off the grid in log-log, over
    ``F`` times its fewest), and ``eps_hat_inf``, the law's over the measured, at the fewest-steps eps and at the
    law's ends. Steps go like ``1/eps`` and ``eps`` on the flanks, so each measured end lies ``log10(r_best /
    r_end)`` decades outside the law's: the claim allows ``|log10 r_best|`` (a count off by one factor along eps
    moves both windows alike), not a count that is off by more at the ends than at the fewest.

    Measured on Marchenko-Pastur, sparse u, case (a) (per-seed windows at 6 and 48 grid points per decade agree
    within 0.03 decade: not the grid): on the flanks the law's ``eps_hat_inf`` is right (within 2%) and its count
    over-counts at every d (``r_end`` 0.56-0.80 at d = 10, 0.58-0.75 at d = 100): ``L`` puts the whole direction
    gap in the ``lambda*_min`` mode, which once w is aligned holds 1e-3 .. 4e-3 of it on the d = 10 flanks where
    ``r_end`` < 0.65 (``ln(s / tol) / ln(1 / tol)`` = 0.50-0.60). At the fewest (29-37 steps, where the flanks
    meet) ``||w||^2`` keeps growing after the first step, which the law leaves out: its ``eps_hat_inf`` is
    1.18-1.25x the measured at d = 10 (1.09-1.12x at d = 100, 1000), and the steps are 0.76-0.80 of its count at
    the measured one (0.54-0.66 at d >= 100), so ``r_best`` = 1.04-1.06 at d = 10 (seeds 1, 2) against 0.67-0.80
    at d >= 100: the ends lie 0.23-0.28 decade out at d = 10, within 0.1 at d >= 100 (docs/problems.md)."""
    if runs.empty:
        return ""
    has_eh = "eff_step_inf" in steps  # stores written before the column: the step counts alone
    listed, drifts = [], []
    for r in runs.sort_values(["d", "seed"]).itertuples():
        own = steps[(steps.method == "bngd") & (steps.case == r.case) & (steps.d == r.d) & (steps.seed == r.seed)]
        own = own[np.isfinite(own.steps_to_tol)].sort_values("eps")
        log_eps = np.log10(own.eps.to_numpy())
        ends = np.log10([r.law_lower_10x, r.law_upper_10x])
        if len(own) < 2 or ends.min() < log_eps[0] or ends.max() > log_eps[-1]:
            continue
        r_best = r.level_steps / r.law_best_steps
        r_end = 10 ** np.interp(ends, log_eps, np.log10(own.steps_to_tol.to_numpy())) / (factor * r.law_best_steps)
        out = np.round(np.log10(r_best / r_end), 2) + 0.0  # + 0.0: no "-0.00"
        drifts.append(out.max())
        text = (
            f"d={int(r.d)} seed {int(r.seed)}: r_best {r_best:.2f}, r_end {r_end[0]:.2f}/{r_end[1]:.2f}, so the ends "
            f"{out[0]:.2f}/{out[1]:.2f} out"
        )
        if has_eh:
            over = np.log10(own.eff_step_law.to_numpy() / own.eff_step_inf.to_numpy())
            at = 10 ** np.interp(np.r_[np.log10(r.best_eps), ends], log_eps, over)
            text += f", the law's eps_hat_inf x{at[0]:.2f} the measured at the fewest, "
            text += f"x{at[1]:.2f}/x{at[2]:.2f} at its ends"
        listed.append(text)
    if not listed:
        return ""
    why = (
        "; the law over-counts its ends more than its fewest: on the flanks its start cost L puts the whole gap "
        "in the slowest mode, which holds a small share of it, while at the fewest, a short run where the flanks "
        "meet, ||w|| grows after the first step (the law's eps_hat_inf over the measured) and offsets that"
        if max(drifts) > 0
        else ""
    )
    return (
        "; the law's count, measured / counted, at its fewest (r_best) and at its lower/upper ends (r_end), where "
        f"the ends are off ({'; '.join(listed)}): each end lies log10(r_best / r_end) outside the law's (steps go "
        f"like 1/eps and eps on the flanks){why}"
    )


def _higher_is_better(cfg: DimensionConfig, case: str, measured: float, law: float, bands: str = "") -> Claim:
    """The paper's "the higher the better": the window widens with d (slope above ``slope_atol``, the flat band)
    where the law's slope is above it, and stays flat where the law's is not; ``bands`` names the runs whose
    window is a transient band (:func:`_transient_bands`). The law-slope claim checks the size of the slope."""
    label = CASES[case]
    if law > cfg.slope_atol:
        # Case (a) widens too on a spectrum whose lambda_max^2 / m2 grows with d (a spiked family).
        why = _mechanism("spiked") + " on this spectrum, a*/a0 fixed" if case == "fixed" else _mechanism(case)
        return Claim(
            id=f"dimension.higher-better.{case}",
            claim=f"The higher the better (F8): BNGD's 10x-window widens with d, {label}",
            quantity="slope of the 10x-window span vs log10 d (decades per decade)",
            predicted=cfg.slope_atol,
            measured=measured,
            holds=measured > cfg.slope_atol,
            relation=">",
            detail=f"the law's slope {law:.2f}: {why}{bands}",
        )
    return below(
        id=f"dimension.higher-better.{case}",
        claim=f"Not the higher the better: BNGD's 10x-window does not widen with d, {label} (the paper's claim "
        "does not hold here); where the windows at small d are transient bands (the transient reaching tol with "
        "the slowest modes left under it: linear spectra, large kappa) they are narrower, and the slope over d "
        "measures that, not the law",
        quantity="slope of the 10x-window span vs log10 d (decades per decade)",
        measured=measured,
        bound=cfg.slope_atol,
        detail=f"the law's slope {law:.2f}: {_mechanism(case)}{bands}",
    )


def _mechanism(case: str) -> str:
    return {
        "fixed": "with a*/a0 fixed nothing in the width depends on d; ||w0|| (which grows like sqrt(d) for Gaussian "
        "w0) only shifts the window",
        "raw": "(a*/a0)^2 = ||u||_H^2 / a0^2 grows like d, and so does eps_hi / eps_lo",
        "spiked": "(lambda*_max + lambda*_min)^2 / m2 grows like d (lambda_max ~ rho d while m2 ~ rho^2 d)",
    }[case]


def row_note(claims: list[Claim]) -> str:
    """The dimension row in one paragraph: where "the higher the better" holds, and the mechanism."""
    held = {c.id.rsplit(".", 1)[1]: c for c in claims if c.id.startswith("dimension.higher-better.")}
    widens = [k for k, c in held.items() if c.relation == ">" and c.holds]
    flat = [k for k, c in held.items() if c.relation == "<=" and c.holds]
    letter = {"fixed": "(a)", "raw": "(b)", "spiked": "(c)"}
    yes, no = " and ".join(letter[k] for k in widens) or "none", " and ".join(letter[k] for k in flat) or "none"
    return (
        f"Reproduced in {yes}, not in {no}. BNGD's window is [eps_lo/F, F eps_hi] with eps_lo ~ eps_hat_opt "
        "||w0||^2/||u||^2 (w barely grows) and eps_hi ~ ||u||^2/(eps_hat_opt ||grad_w J(a0, w0)||^2) (the first "
        "step sets ||w||), so its width is 2 log10 F + log10[(a*/a0)^2 (lambda*_max + lambda*_min)^2 / (4 m2)] "
        "decades: ||w0|| cancels, and the window widens with d only when a*/a0 grows (a raw target with O(1) "
        "coefficients and a0 = 1, case (b)) or lambda_max^2/m2 does (a spiked spectrum, case (c)); with a*/a0 "
        "fixed (a standardised target, case (a)) it does not. GD's window is set by its spectrum alone."
    )


def plot(cfg: DimensionConfig, tables: Tables, folder: Path) -> list[Path]:
    med = case_table(tables["windows"]).reset_index()
    fig, axes = new_figure(ncols=len(cfg.cases), width=4.4, height=3.8)
    for ax, case in zip(axes, cfg.cases, strict=True):
        for method, colour, name in (("gd", GD_COLOUR, "GD"), ("bngd", BNGD_COLOUR, "BNGD")):
            sub = med[(med.case == case) & (med.method == method)]
            for f, style in (("10x", "-"), ("2x", ":")):
                ax.plot(sub.d, sub[f"span_{f}"], style, marker="o", color=colour, label=f"{name} {f}")
        bn = med[(med.case == case) & (med.method == "bngd")]
        ax.plot(bn.d, bn.law_width_10x, "--", color=THEORY_COLOUR, label="window law 10x")
        ax.plot(bn.d, bn.law_width_2x, "-.", color=THEORY_COLOUR, lw=0.8, label="window law 2x")
        ax.set_xscale("log")
        ax.set_xlabel("dimension d")
        ax.set_ylabel("window span (decades of eps)")
        ax.set_title(CASES[case], fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Robustness to dimension: {cfg.family_label()}, tol {cfg.tol:g}")
    return save(fig, folder, "dimension")


register(
    Experiment(
        name="dimension",
        row="Robustness to dimension",
        facts=("F8", "O6"),
        config=DimensionConfig,
        run=run,
        summarise=summarise,
        plot=plot,
        row_note=row_note,
    )
)
