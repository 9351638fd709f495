"""The command line: user errors are one line with exit status 2, never a traceback."""

import subprocess
import sys

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.nn.data import missing_files


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_registered_experiments(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "convergence" in out


def test_theory_prints_closed_form_quantities(capsys):
    code, out, _ = run_cli(capsys, "theory", "--d", "10", "--kappa", "100", "--spacing", "log", "--eps", "0.01")
    assert code == 0
    values = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) == 2)
    assert float(values["gd_threshold"]) == pytest.approx(0.02)
    assert float(values["kappa"]) == pytest.approx(100)
    assert 1 < float(values["kappa_star"]) <= 100
    assert "gd_rate(eps=0.01)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["run", "convergence", "--bogus"], "No such option"),
        (["run", "convergence", "--set", "nonsense=1"], "nonsense: unknown key"),
        (["run", "convergence", "--set", "eps_min=-1"], "eps_min"),
        (["run", "convergence", "--set", "steps"], "key=value"),
        (["run", "convergence", "--profile", "huge"], "huge"),
        (["run", "convergence", "--device", "tpu"], "device"),
        (["frobnicate"], "No such command"),
    ],
)
def test_user_errors_are_one_line_with_status_2(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, *args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.array([[1.0, 2.0], [0.0, 1.0]]), "not symmetric"),
        (np.array([[1.0, 0.0], [0.0, -2.0]]), "not positive definite"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
    ],
)
def test_invalid_matrix_files_are_rejected(capsys, tmp_path, matrix, message):
    path = tmp_path / "H.npy"
    np.save(path, matrix)
    code, _, err = run_cli(capsys, "theory", "--matrix", str(path))
    assert code == 2 and message in err and "Traceback" not in err


def test_matrix_file_with_moments(capsys, tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, H=np.diag([4.0, 1.0]), g=np.array([1.0, 1.0]))
    code, out, _ = run_cli(capsys, "theory", "--matrix", str(path))
    assert code == 0 and "gd_threshold" in out and "0.5" in out


def test_run_then_rerun_reuses_stored_results(capsys, tmp_path):
    args = [
        "run",
        "convergence",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--set",
        "num_eps=13",
        "--set",
        "steps=200",
        "--set",
        "seeds=1",
        "--set",
        "refine_rounds=1",
    ]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "computed" in out and "holds" in out
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "reused stored results" in out
    assert len(list(tmp_path.glob("convergence/*/figures/convergence.png"))) == 1


def test_console_script_exit_code_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "bnlab.cli", "run", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown experiment") and "Traceback" not in proc.stderr


def test_data_list_and_fetch_errors(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", str(tmp_path))
    assert code == 0 and "mnist1d" in out and "bnlab data fetch mnist" in out
    (tmp_path / "mnist").mkdir()
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for stem in stems[:3]:
        (tmp_path / "mnist" / f"{stem}.gz").write_bytes(b"x")
    assert [p.name for p in missing_files("mnist", tmp_path)] == [stems[3]]
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", str(tmp_path))
    assert "bnlab data fetch mnist" in out  # three of four files are not enough
    (tmp_path / "mnist" / stems[3]).write_bytes(b"x")  # raw (not gzipped) counts too
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", str(tmp_path))
    assert "bnlab data fetch mnist" not in out and missing_files("mnist", tmp_path) == []
    assert missing_files("mnist1d") == [] and len(missing_files("cifar10", tmp_path)) == 6
    code, _, err = run_cli(capsys, "data", "fetch", "imagenet", "--data-dir", str(tmp_path))
    assert code == 2 and err.startswith("error: unknown downloadable dataset")


def test_reproduce_checks_datasets_before_running_anything(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA_DIR", str(tmp_path / "no-data"))
    code, _, err = run_cli(capsys, "reproduce", "--profile", "paper", "--out", str(tmp_path / "out"))
    assert code == 2 and "needs mnist" in err and "bnlab data fetch mnist" in err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_reproduce_families_writes_the_table_and_refuses_network_experiments(capsys, tmp_path, monkeypatch):
    import pandas as pd

    import bnlab.experiments.families as families

    code, _, err = run_cli(capsys, "reproduce", "--families", "--only", "nn-lr", "--out", str(tmp_path))
    assert code == 2 and "OLS experiments only" in err and "Traceback" not in err
    seen = {}

    def fake(out, profile, names, **kw):
        seen.update(names=names, profile=profile)
        row = {"experiment": "rate", "spectrum": "spiked", "family": "d=10, spiked rho=0.5", "id": "rate.x"}
        return pd.DataFrame([{**row, "holds": False, "claim": "c", "detail": "why"}])

    monkeypatch.setattr(families, "run_families", fake)
    code, out, _ = run_cli(capsys, "reproduce", "--families", "--only", "rate", "--out", str(tmp_path))
    assert code == 0 and seen == {"names": ["rate"], "profile": "quick"} and "0 of 1 claims hold" in out
    assert "spiked" in (tmp_path / "families.md").read_text() and (tmp_path / "families.csv").exists()
