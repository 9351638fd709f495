"""``bnlab lr-window``: a user's network and data, BN against its BN-free twin, and one-line errors."""

import json
import textwrap

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.experiments.lr_window import parse_lrs, run_lr_window

MODEL = """
from torch import nn


def mlp():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10), nn.BatchNorm1d(10)
    )


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 10),
    )


def recurrent():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LSTM(8, 8))


def narrow():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))


def broken():
    raise RuntimeError("no network today")
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent(MODEL))
    return path


def test_bn_window_is_wider_than_the_twins_on_digits(model_file, tmp_path):
    out = tmp_path / "run"
    res = run_lr_window(f"{model_file}:mlp", "digits", lrs="1e-2:1e2:9", seeds=3, steps=150, out=out)
    claims = {c.id: c for c in res.claims}
    wider = claims["lr-window.bn-wider-5pct"]
    print(wider)
    assert wider.holds and wider.ci_low > 0
    bn, plain = claims["lr-window.width-5pct.bn"], claims["lr-window.width-5pct.no-bn"]
    assert bn.measured > plain.measured and bn.ci_low <= bn.measured <= bn.ci_high
    assert 1e-2 <= claims["lr-window.best-lr.bn"].measured <= 1e2
    # The twin diverges or fails at the top of the grid where BN still trains.
    top = res.final[res.final.lr == res.final.lr.max()]
    assert top[top.variant == "bn"].test_acc.min() > 0.8
    assert top[top.variant == "no-bn"].test_acc.fillna(0).max() < 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert {c["id"] for c in summary["claims"]} == set(claims)
    assert (out / "figures" / "lr_window.png").exists() and (out / "tables" / "windows.parquet").exists()
    assert len(res.final) == 2 * 9 * 3


def _npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "X_train": rng.standard_normal((50, 64)),
        "y_train": rng.integers(0, 10, 50),
        "X_test": rng.standard_normal((20, 64)),
        "y_test": rng.integers(0, 10, 20),
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


BAD_DATA = [
    ({"X_test": None}, "lacks X_test"),
    ({"X_train": np.full((50, 64), np.nan)}, "NaN or infinite"),
    ({"y_test": np.full(20, 12)}, "unseen in y_train"),
    ({"y_train": np.full(50, 1.5)}, "class labels"),
    ({"X_test": np.zeros((20, 63))}, "X_test examples"),
    ({"y_train": np.zeros(49, dtype=int)}, "50 rows but y_train has 49"),
]


@pytest.mark.parametrize(("override", "message"), BAD_DATA)
def test_malformed_npz_is_one_line_and_exit_2(capsys, model_file, tmp_path, override, message):
    data = _npz(tmp_path / "data.npz", **override)
    out = tmp_path / "out"
    code = main(["lr-window", "--model", f"{model_file}:mlp", "--data", str(data), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_not_an_npz_is_one_line(capsys, model_file, tmp_path):
    data = tmp_path / "junk.npz"
    data.write_text("not a zip")
    code = main(["lr-window", "--model", f"{model_file}:mlp", "--data", str(data)])
    _, err = capsys.readouterr()
    assert code == 2 and "cannot read" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{file}:recurrent", "unsupported layer 2 LSTM"),
        ("{file}:broken", "RuntimeError: no network today"),
        ("{file}:narrow", "outputs 5 scores but the data has 10 classes"),
        ("{file}:absent", "has no function 'absent'"),
        ("{file}", "FILE.py:FUNCTION"),
        ("{dir}/missing.py:mlp", "not found"),
    ],
)
def test_bad_model_is_one_line_and_exit_2(capsys, model_file, tmp_path, spec, message):
    out = tmp_path / "out"
    model = spec.format(file=model_file, dir=tmp_path)
    code = main(["lr-window", "--model", model, "--data", "digits", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_user_npz_data_runs(capsys, model_file, tmp_path):
    data = _npz(tmp_path / "data.npz")
    out = tmp_path / "out"
    args = ["--lrs", "1e-2:1:3", "--seeds", "1", "--steps", "3", "--batch-size", "10", "--out", str(out)]
    code = main(["lr-window", "--model", f"{model_file}:mlp", "--data", str(data), *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((out / "summary.json").read_text())["data"] == "data"


def test_a_cnn_with_dropout_on_digits_runs_in_python(model_file, tmp_path):
    res = run_lr_window(f"{model_file}:cnn", "digits", lrs=[0.01, 0.1], seeds=2, steps=5, out=tmp_path / "o")
    assert set(res.final.variant) == {"bn", "no-bn"} and len(res.final) == 8
    assert res.final.test_acc.notna().all()


def test_lr_grid_parsing():
    assert np.allclose(parse_lrs("1e-3:1e3:7"), np.logspace(-3, 3, 7))
    for bad in ("1:2", "2:1:5", "a:b:c", "1e-3:1e3:1"):
        with pytest.raises(Exception, match="MIN"):
            parse_lrs(bad)
