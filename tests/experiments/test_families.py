"""The family matrix (docs/problems.md) and the runner that gathers every OLS claim over it."""

import pandas as pd
import pytest

from bnlab.experiments.base import get
from bnlab.experiments.claims import Claim
from bnlab.experiments.families import OLS_EXPERIMENTS, families_markdown, family_matrix, overrides_for, run_families
from bnlab.experiments.runner import Outcome


def test_matrix_has_kappa_only_where_it_applies():
    members = family_matrix()
    assert len(members) == (2 * 3 * 3 + 2 * 3) * 2  # linear/log x d x kappa, MP/spiked x d; x two u laws
    assert all(("kappa" in m) == (m["spectrum"] in ("linear", "log")) for m in members)
    assert {m["u_law"] for m in members} == {"gaussian", "sparse"}
    for name in OLS_EXPERIMENTS:  # every member resolves to a valid config of every OLS experiment
        for m in members[::7]:
            get(name).resolve("quick", overrides_for(name, m))
    assert "d" not in overrides_for("dimension", members[0]) and "d" in overrides_for("rate", members[0])


def test_runner_dedupes_swept_fields_and_names_the_family_of_each_claim(tmp_path):
    calls = []

    def fake_run(name, out, profile, overrides, **kw):
        calls.append((name, dict(overrides)))
        cfg = get(name).resolve(profile, overrides)
        holds = not (overrides.get("spectrum") == "spiked" and name == "rate")
        claim = Claim(id=f"{name}.x", claim="c", quantity="q", predicted=1, measured=1, holds=holds, detail="why")
        return Outcome(get(name), cfg, None, [claim], [], reused=True)

    members = family_matrix(dims=(10, 100), kappas=(10.0,), u_laws=("gaussian",))
    table = run_families(tmp_path, "quick", ["rate", "dimension"], members, run=fake_run)
    assert sum(n == "rate" for n, _ in calls) == len(members)  # one per member
    assert sum(n == "dimension" for n, _ in calls) == 4  # d is swept inside: one per spectrum
    failing = table[~table.holds]
    assert set(failing.spectrum) == {"spiked"} and failing.family.str.contains("spiked").all()
    text = families_markdown(table)
    assert (
        "spiked" in text
        and "`rate.x`" in text
        and text.startswith(f"# OLS claims over the family matrix: {len(table) - len(failing)}")
    )


@pytest.mark.slow
def test_every_ols_claim_over_the_family_matrix(tmp_path):
    """Every claim of every OLS experiment (quick profile) over the 48 members: each that does not hold is listed
    with its family and the claim's own account of why (`bnlab reproduce --families`; 6 min on two cores
    from an empty store: 1519 claims, 1487 holding)."""
    table = run_families(tmp_path, "quick", progress=False)
    pd.testing.assert_index_equal(table.columns[:2], pd.Index(["experiment", "spectrum"]))
    failing = table[~table.holds]
    assert (failing.family.str.len() > 0).all() and (failing.detail.str.len() > 0).all()
    (tmp_path / "families.md").write_text(families_markdown(table))
    print(families_markdown(table))
