"""Browsing a results folder: bnlab ls, bnlab.results.open, bnlab report --run."""

import pandas as pd
import pytest

import bnlab.results
from bnlab import BnlabError
from bnlab.cli import main

TINY = ["--set", "num_eps=9", "--set", "steps=100", "--set", "refine_rounds=0", "--no-progress"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs of one experiment (seeds=1, seeds=2) and one of another, in one results folder."""
    out = tmp_path_factory.mktemp("results")
    for seeds in (1, 2):
        assert main(["run", "convergence", "--out", str(out), "--set", f"seeds={seeds}", *TINY]) == 0
    assert main(["run", "scaling-law", "--out", str(out), "--set", "steps=50", "--set", "identity_steps=20"]) == 0
    return out


def test_runs_lists_every_run_with_its_status_claims_and_time(two_runs):
    runs = bnlab.results.runs(two_runs)
    assert runs.experiment.tolist() == ["convergence", "convergence", "scaling-law"]
    assert (runs.status == "complete").all() and (runs.profile == "quick").all()
    assert runs.claims.str.fullmatch(r"\d+/\d+").all() and (runs.wall_s > 0).all() and (runs.cpu_s > 0).all()
    assert runs.chunks.tolist()[:2] == [1, 2] and (runs.devices == "cpu").all()
    assert bnlab.results.differing(list(runs.config[:2])) == ["seeds"]


def test_open_gives_one_tidy_frame_over_all_runs_with_config_columns(two_runs):
    frame = bnlab.results.open(two_runs, "convergence")
    runs = bnlab.results.runs(two_runs, "convergence")
    assert set(frame.run_id) == set(runs.run_id)
    assert {"run_id", "seeds", "kappa", "num_eps", "eps_min", "method", "rel_gap"} <= set(frame.columns)
    assert frame.groupby("seeds").seed.nunique().to_dict() == {1: 1, 2: 2}  # each run's rows carry its config
    single = pd.read_parquet(next(two_runs.glob(f"convergence/{runs.run_id[0]}/tables/final.parquet")))
    assert len(frame[frame.run_id == runs.run_id[0]]) == len(single)
    with pytest.raises(BnlabError, match="no complete runs of 'rate'"):
        bnlab.results.open(two_runs, "rate")
    with pytest.raises(BnlabError, match="has no table 'nope'"):
        bnlab.results.open(two_runs, "convergence", table="nope")


def test_ls_prints_the_runs(capsys, two_runs):
    assert main(["ls", str(two_runs)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[1] for r in rows] == ["convergence", "convergence", "scaling-law"]
    assert [r[3] for r in rows[:2]] == ["seeds=1", "seeds=2"] and rows[2][3] == "-"
    assert all(r[4] == "complete" for r in rows)
    assert main(["ls", str(two_runs / "nope")]) == 2


def test_report_says_which_run_it_took_and_accepts_a_run_id(capsys, two_runs):
    runs = bnlab.results.runs(two_runs, "convergence")
    assert main(["report", str(two_runs)]) == 0
    out = capsys.readouterr().out
    assert f"convergence: run {runs.run_id.iloc[-1]} (of 2 stored run(s) of convergence)" in out  # the latest
    assert main(["report", str(two_runs), "--run", runs.run_id.iloc[0][:6]]) == 0
    out = capsys.readouterr().out
    assert f"convergence: run {runs.run_id.iloc[0]}" in out and "scaling-law" not in out.split("Verdicts")[0]
    assert main(["report", str(two_runs), "--run", "zzz"]) == 2
    assert "no run under" in capsys.readouterr().err


def test_a_config_key_that_is_also_a_table_column_is_prefixed(tmp_path):
    from bnlab.sweep import ResultStore

    run = ResultStore(tmp_path).open("demo", {"seed": 7, "grid": [1, 2]})
    run.write_table("t", pd.DataFrame({"seed": [0, 1], "y": [1.0, 2.0]}))
    run.mark_complete()
    frame = bnlab.results.open(tmp_path, "demo")
    assert frame.seed.tolist() == [0, 1] and frame["config.seed"].tolist() == [7, 7]
    assert frame.grid.tolist() == [(1, 2), (1, 2)]  # lists as tuples: hashable, so they group
