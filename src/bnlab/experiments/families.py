"""Every OLS experiment's claims over the matrix of problem families (docs/problems.md).

The matrix: spectrum in {linear, log, marchenko-pastur, spiked} x d in {10, 100, 1000} x kappa in {10, 100, 1e4}
(kappa for linear and log only) x u_law in {gaussian, sparse}: 48 problems. Each OLS experiment runs on each
member its config can take (``dimension`` sweeps d itself, so it runs once per remaining fields), and the claims
are gathered into one table with the member beside each: a claim that does not hold is then named with the family
where it stops holding, its detail saying why.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bnlab.experiments.base import get
from bnlab.experiments.problems import FamilyConfig
from bnlab.experiments.runner import Outcome, run_experiment

SPECTRA = ("linear", "log", "marchenko-pastur", "spiked")
DIMS = (10, 100, 1000)
KAPPAS = (10.0, 100.0, 1e4)
U_LAWS = ("gaussian", "sparse")
OLS_EXPERIMENTS = (
    "convergence",
    "rate",
    "effective-step",
    "lr-robustness",
    "phase-diagram",
    "scaling-law",
    "overparam",
    "dimension",
)


def family_matrix(
    spectra: Iterable[str] = SPECTRA,
    dims: Iterable[int] = DIMS,
    kappas: Iterable[float] = KAPPAS,
    u_laws: Iterable[str] = U_LAWS,
) -> list[dict[str, Any]]:
    """The members as ``--set`` overrides; kappa only where it applies (linear, log)."""
    members = []
    for spectrum, d, u_law in itertools.product(spectra, dims, u_laws):
        for kappa in kappas if spectrum in ("linear", "log") else (None,):
            member = {"spectrum": spectrum, "d": d, "u_law": u_law}
            members.append(member if kappa is None else {**member, "kappa": kappa})
    return members


def overrides_for(name: str, member: Mapping[str, Any]) -> dict[str, Any]:
    """The member's fields this experiment's config has (``dimension`` sweeps d itself, ``overparam`` sweeps
    spectra, d and kappa for its family check and takes the member's fields for its rate problem)."""
    fields = get(name).config.model_fields
    return {k: v for k, v in member.items() if k in fields}


def run_families(
    out: Path,
    profile: str = "quick",
    names: Iterable[str] = OLS_EXPERIMENTS,
    members: Iterable[Mapping[str, Any]] | None = None,
    run: Callable[..., Outcome] = run_experiment,
    figures: bool = False,
    **kwargs: Any,
) -> pd.DataFrame:
    """Run each experiment on each member (stored and resumable as any run) and return one row per claim:
    experiment, the member's fields, its label (``FamilyConfig.family_label``), the claim id, holds, the
    claim's text and detail. Figures are left out unless ``figures`` (``bnlab report OUT`` draws them later
    from the stored tables)."""
    rows, done = [], set()
    for member in members if members is not None else family_matrix():
        for name in names:
            overrides = overrides_for(name, member)
            key = (name, tuple(sorted(overrides.items())))
            if key in done:  # a member that differs only in a field this experiment sweeps itself
                continue
            done.add(key)
            outcome = run(name, out, profile, overrides, figures=figures, **kwargs)
            cfg = outcome.config
            label = cfg.family_label(getattr(cfg, "d", None)) if isinstance(cfg, FamilyConfig) else ""
            for c in outcome.claims:
                rows.append(
                    {
                        "experiment": name,
                        **member,
                        "family": label,
                        "id": c.id,
                        "holds": c.holds,
                        "claim": c.claim,
                        "detail": c.detail,
                    }
                )
    return pd.DataFrame(rows)


def families_markdown(table: pd.DataFrame) -> str:
    """The claims that do not hold, each with the family where it does not, and a count of those that do."""
    failing = table[~table.holds]
    lines = [
        f"# OLS claims over the family matrix: {int(table.holds.sum())} of {len(table)} hold",
        "",
        "| experiment | family | claim id | why (detail) |",
        "|---|---|---|---|",
    ]
    for r in failing.itertuples():
        lines.append(f"| {r.experiment} | {r.family} | `{r.id}` | {r.detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
