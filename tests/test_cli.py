"""The command line: user errors are one line with exit status 2, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

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


# -- every bad input: one line, exit 2, nothing left behind ------------------------------------------------------


def _tree(path):
    """Every path under ``path`` with its size and mode: equal before and after means nothing was left or changed."""
    if not path.exists():
        return None
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mode) for p in path.rglob("*"))


def assert_one_line_error(code, err, message):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def _write(path, content):
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.npz", {"H": np.eye(2), "g": np.ones(2), "c": np.ones(3)}, "c must be a single number, got shape (3,)"),
        ("m.npz", b"", "is empty"),
        ("m.npy", b"", "is empty"),
        ("H.txt", b"1 0\n0 1\n", "is not a NumPy .npy or .npz file"),
        ("H.npy", np.eye(2) * (1 + 1j), "H must be real, got complex values"),
        ("m.npz", {"H": np.eye(2)}, "must hold arrays 'H' and 'g' (it holds H)"),
        ("m.npz", {"H": np.eye(2), "g": np.ones(2), "c": np.array(np.inf)}, "c contains NaN or infinite values"),
        ("H.npy", b"\x93NUMPY\x01\x00garbage", "cannot read"),
        ("m.npz", b"PK\x03\x04garbage", "cannot read"),
        ("H.npy", np.array([object()], dtype=object), "cannot read"),
    ],
)
def test_bad_matrix_files_are_one_line(capsys, tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    before = _tree(tmp_path)
    code, _, err = run_cli(capsys, "theory", "--matrix", str(path))
    assert_one_line_error(code, err, message)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["eps_min=10", "eps_max=1"], "eps_min must be below eps_max (got 10 > 1)"),
        (["kappa=Infinity"], "kappa: Input should be a finite number"),
        (["kappa=NaN"], "kappa: Input should be a finite number"),
        (["seeds=1000000000000"], "seeds = 1000000000000 is beyond"),
        (["steps=[]"], "steps"),
    ],
)
def test_invalid_config_values_are_rejected_before_anything_is_written(capsys, tmp_path, sets, message):
    out = tmp_path / "out"
    args = [arg for s in sets for arg in ("--set", s)]
    code, _, err = run_cli(capsys, "run", "convergence", "--out", str(out), *args)
    assert_one_line_error(code, err, message)
    assert not out.exists()


def test_bad_out_paths(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = _tree(tmp_path)
    for out, message in [
        (afile / "sub", "afile is not a folder"),
        (afile, "is a file, not a folder"),
        (tmp_path / "missing" / "parent" / "out", "does not exist"),
    ]:
        code, _, err = run_cli(capsys, "run", "convergence", "--out", str(out), "--set", "seeds=1")
        assert_one_line_error(code, err, message)
    assert _tree(tmp_path) == before


def test_read_only_out_and_report_folders(capsys, tmp_path, monkeypatch):
    """As root, chmod does not stop writes, so the check that a folder is writable is what is tested here."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and not (Path(p) == ro and mode & os.W_OK))
    code, _, err = run_cli(capsys, "run", "convergence", "--out", str(ro / "out"))
    assert_one_line_error(code, err, "is not writable")
    code, _, err = run_cli(capsys, "run", "convergence", "--out", str(ro))
    assert_one_line_error(code, err, f"--out {ro} is not writable")
    code, _, err = run_cli(capsys, "report", str(ro))
    assert_one_line_error(code, err, f"report folder {ro} is not writable")
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_on_a_really_read_only_folder(capsys, tmp_path):
    tmp_path.chmod(0o555)
    try:
        code, _, err = run_cli(capsys, "report", str(tmp_path))
        assert_one_line_error(code, err, "not writable")
    finally:
        tmp_path.chmod(0o755)


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NN_TINY = ["num_lr=2", "seeds=1", "steps=2", "log_every=1", "n_test=10", "hidden=4"]


def _nn_run(capsys, out, data_dir, *extra):
    sets = [arg for s in [*NN_TINY, "dataset=mnist", f"data_dir={data_dir}", *extra] for arg in ("--set", s)]
    return run_cli(capsys, "run", "nn-lr", "--no-progress", "--out", str(out), *sets)


def test_a_run_failing_on_its_data_leaves_no_folder(capsys, tmp_path):
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    for stem in IDX_STEMS:
        (data / "mnist" / stem).write_bytes(b"\x00\x00\x08\x03" + bytes(20))  # a header promising more bytes
    out = tmp_path / "out"
    code, _, err = _nn_run(capsys, out, data)
    assert_one_line_error(code, err, "IDX payload has")
    assert not out.exists()
    out.mkdir()  # an existing results folder is left as it was
    code, _, err = _nn_run(capsys, out, data)
    assert code == 2 and list(out.iterdir()) == []
    code, _, err = _nn_run(capsys, out, tmp_path / "nowhere")  # missing files: refused before anything runs
    assert_one_line_error(code, err, "nn-lr needs mnist")
    assert list(out.iterdir()) == []


def test_ctrl_c_says_how_to_resume(capsys, tmp_path, monkeypatch):
    import bnlab.experiments.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bnlab.experiments.runner, "run_experiment", interrupted)
    code, _, err = run_cli(capsys, "run", "convergence", "--out", str(tmp_path / "out"))
    assert code == 130
    assert err.strip() == "interrupted: finished chunks are kept; run the same command again to resume"
    assert not (tmp_path / "out").exists()


def test_unknown_command_names_the_program_once(capsys):
    code, _, err = run_cli(capsys, "frobnicate")
    assert_one_line_error(code, err, "(see 'bnlab --help')")
    code, _, err = run_cli(capsys, "run", "convergence", "--bogus")
    assert_one_line_error(code, err, "(see 'bnlab run --help')")


def test_dry_run_counts_chunks_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    tiny = ["--set", "num_eps=9", "--set", "steps=100", "--set", "refine_rounds=0", "--no-progress"]
    code, text, _ = run_cli(capsys, "run", "convergence", "--out", str(out), "--set", "seeds=2", *tiny, "--dry-run")
    assert code == 0 and "grid: 2 chunks" in text and "chunks: 2 to compute, 0 stored" in text
    assert not out.exists()
    code, text, _ = run_cli(capsys, "run", "convergence", "--out", str(out), "--set", "seeds=2", *tiny)
    assert code == 0 and "computed 2 chunk(s)" in text
    before = _tree(out)
    code, text, _ = run_cli(capsys, "run", "convergence", "--out", str(out), "--set", "seeds=3", *tiny, "--dry-run")
    assert code == 0 and "chunks: 1 to compute, 2 stored" in text
    assert _tree(out) == before
    code, text, _ = run_cli(capsys, "run", "convergence", "--out", str(out), "--set", "seeds=3", *tiny)
    assert code == 0 and "computed 1 chunk(s)" in text
    modes = {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~_umask()}  # every file readable as the user's umask says (0644 under 022)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- fuzz: random --set values to every experiment, random bytes as files ------------------------------------------

FUZZ_VALUES = [
    "0", "1", "-1", "3", "1000000000000", "-1000000000000", "0.5", "-2.5", "1e300", "-1e-300", "1e999", "NaN",
    "Infinity", "-Infinity", "", "abc", "log", "linear", "[]", "[1, 2]", "[NaN]", "{}", "null", "true", '"x"',
    "[[1]]", "cuda", "M1", "mnist", "float64",
]  # fmt: skip
PLAUSIBLE = ["1", "2", "3", "0.5", "1.5", "10", "1e-3", "100", "[1, 10]", "[0.1, 1.0]"]  # half the draws: to get past
# validation into the experiment's own code (planning its grid) as often as not


def _assert_clean_outcome(code, err, out):
    assert code in (0, 2), err
    if code == 2:
        assert_one_line_error(code, err, "")
    assert not out.exists() or all(p.is_file() is False for p in out.rglob("*"))  # --dry-run writes nothing


@pytest.mark.parametrize("name", sorted(__import__("bnlab.experiments", fromlist=["REGISTRY"]).REGISTRY))
def test_fuzz_set_values_never_traceback_nor_leave_files(capsys, tmp_path, name):
    from bnlab.experiments import get

    rng = np.random.default_rng(sum(map(ord, name)))
    fields = [f for f in get(name).config.model_fields if f not in ("device", "data_dir")] + ["no_such_key"]
    out = tmp_path / "out"
    for _ in range(40):  # dry runs: milliseconds each
        sets = []
        for _ in range(int(rng.integers(1, 3))):
            sets += ["--set", f"{rng.choice(fields)}={rng.choice(PLAUSIBLE if rng.random() < 0.5 else FUZZ_VALUES)}"]
        code, _, err = run_cli(capsys, "run", name, "--dry-run", "--out", str(out), *sets)
        _assert_clean_outcome(code, err, out)
    assert not out.exists()


def test_fuzz_random_bytes_as_matrix_and_dataset_files(capsys, tmp_path):
    rng = np.random.default_rng(11)
    prefixes = [b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
                b"PK\x03\x04", b"\x00\x00\x08\x03", b"\x00\x00\x08\x01"]  # fmt: skip
    matrix = tmp_path / "m.npy"
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "mnist").mkdir(parents=True)
    for i in range(24):
        blob = prefixes[i % len(prefixes)] + rng.bytes(int(rng.integers(0, 64)))
        matrix.write_bytes(blob)
        code, _, err = run_cli(capsys, "theory", "--matrix", str(matrix))
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        for stem in IDX_STEMS:
            (data / "mnist" / stem).write_bytes(prefixes[int(rng.integers(len(prefixes)))] + rng.bytes(48))
        if i % 4 == 0:  # a real run that reads the files (a few: each starts the trainer's imports)
            code, _, err = _nn_run(capsys, out, data)
            assert_one_line_error(code, err, "")
            assert not out.exists()


def test_a_real_ctrl_c_keeps_finished_chunks_and_says_how_to_resume(tmp_path):
    import functools
    import signal
    import time

    out = tmp_path / "out"
    # Four chunks of ~1.5 s each (networks on MNIST-1D): the signal lands while one is being computed. (A
    # least-squares run made of many tiny chunks finished before the signal arrived once its loops got faster.)
    args = [sys.executable, "-m", "bnlab.cli", "run", "nn-lr", "--profile", "quick", "--out", str(out)]
    args += ["--no-progress"]
    # A shell without job control starts background jobs with SIGINT ignored, and an ignored SIGINT is inherited
    # and kept by Python: give the child the default disposition, so that it turns the signal into Ctrl-C.
    restore = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("chunks/*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: finished chunks are kept; run the same command again to resume"
    assert "Traceback" not in err
    kept = len(list(out.glob("chunks/*.parquet")))
    assert 1 <= kept < 4 and list(out.glob("chunks/.*")) == []  # finished chunks kept, no lock left
    run = next(out.glob("nn-lr/*"))
    assert not (run / "COMPLETE").exists() and json.loads((run / "run.json").read_text())["wall_s"] > 0
