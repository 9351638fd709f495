"""Every OLS experiment: typed config, two profiles, overrides from the command line, unknown keys rejected."""

import numpy as np
import pytest

from bnlab.errors import BnlabError
from bnlab.experiments import REGISTRY, get

OLS = [
    "convergence",
    "phase-diagram",
    "rate",
    "overparam",
    "effective-step",
    "lr-robustness",
    "dimension",
    "scaling-law",
]
ROWS = {"Convergence", "Convergence rate", "Robustness to learning rate", "Robustness to dimension"}


@pytest.mark.parametrize("name", OLS)
def test_registered_with_both_profiles_and_a_paper_row(name):
    exp = get(name)
    assert exp.row in ROWS
    for profile in ("quick", "paper"):
        exp.resolve(profile)


@pytest.mark.parametrize("name", OLS)
def test_unknown_key_is_rejected(name):
    with pytest.raises(BnlabError, match="unknown key"):
        get(name).resolve("quick", ["no_such_field=1"])


def test_overrides_from_the_command_line_are_typed():
    cfg = get("dimension").resolve("quick", ["dims=[10, 20]", 'cases=["raw"]', "tol=1e-4", "spacing=linear"])
    assert cfg.dims == (10, 20) and cfg.cases == ("raw",) and cfg.tol == 1e-4 and cfg.spectrum == "linear"
    with pytest.raises(BnlabError):
        get("dimension").resolve("quick", ['cases=["sphere"]'])


@pytest.mark.parametrize("name", ["convergence", "lr-robustness", "effective-step", "phase-diagram"])
def test_paper_profile_spans_the_full_eps_grid(name):
    cfg = get(name).resolve("paper")
    assert cfg.eps_min <= 1e-4 and cfg.eps_max >= 1e8 and cfg.num_eps >= 200


def test_paper_dimension_goes_to_ten_thousand_in_the_three_cases():
    cfg = get("dimension").resolve("paper")
    assert max(cfg.dims) >= 10_000 and set(cfg.cases) == {"fixed", "raw", "spiked"} and cfg.seeds >= 3
    assert max(cfg.spiked_dims) >= 1000


@pytest.mark.parametrize("name", OLS)
def test_every_ols_experiment_takes_the_family_fields(name):
    """docs/problems.md: the problem family is set from the command line, the same way in every experiment."""
    fields = ["spectrum=marchenko-pastur", "aspect=3", "u_law=sparse", "u_norm=unit", "w0_norm=unit", "a0=2"]
    cfg = get(name).resolve("quick", fields)
    assert (cfg.spectrum, cfg.aspect, cfg.u_law, cfg.u_norm, cfg.w0_norm, cfg.a0) == (
        "marchenko-pastur",
        3.0,
        "sparse",
        "unit",
        "unit",
        2.0,
    )
    with pytest.raises(BnlabError, match="u_law"):
        get(name).resolve("quick", ["u_law=cauchy"])


def test_every_registered_experiment_reports_a_row():
    assert all(exp.row for exp in REGISTRY.values())
    assert np.all([name in REGISTRY for name in OLS])


def test_every_experiment_takes_its_purpose_and_profiles_from_its_config():
    for exp in REGISTRY.values():
        assert exp.purpose and "\n" not in exp.purpose and not exp.purpose.endswith(".")
        # mnist: the network sweeps on real MNIST (issue 9); other experiments keep quick and paper only.
        extra = {"mnist"} if exp.name.startswith("nn-") else set()
        assert {"quick", "paper"} <= set(exp.profiles) <= {"quick", "paper"} | extra, exp.name


def test_chunks_carry_their_grid_point_and_a_config_object(tmp_path):
    from bnlab.experiments.base import RunContext
    from bnlab.sweep import ResultStore

    cfg = get("rate").resolve("quick")
    store = ResultStore(tmp_path).open("probe", {"x": 1})
    frame = RunContext(store, progress=False).per_chunk(cfg, _probe_chunk, seed=range(2), norm=("unit", "gaussian"))
    assert list(zip(frame.seed, frame.norm, frame.steps, strict=True)) == [
        (0, "unit", cfg.steps),
        (0, "gaussian", cfg.steps),
        (1, "unit", cfg.steps),
        (1, "gaussian", cfg.steps),
    ]
    assert sorted(frame.chunk) == ["seed0-normgaussian", "seed0-normunit", "seed1-normgaussian", "seed1-normunit"]


def _probe_chunk(cfg, seed, norm):
    import pandas as pd

    return pd.DataFrame({"steps": [cfg.steps]})
