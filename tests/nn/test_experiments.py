"""The registered network experiments on tiny configs: their verdicts and numbers."""

import numpy as np
import pytest

from bnlab import BnlabError
from bnlab.experiments import get, run_experiment
from bnlab.experiments.nn_common import windows
from bnlab.experiments.nn_sweeps import curve_shift_decades

TINY = {"hidden": 32, "num_lr": 13, "seeds": 1, "steps": 150, "log_every": 50, "n_test": 500}


def test_lr_sweep_bn_window_is_wider_and_plain_network_diverges(tmp_path):
    out = run_experiment("nn-lr", tmp_path, overrides=TINY, progress=False)
    claims = {c.id: c for c in out.claims}
    bn_window, plain_diverged = claims["nn-lr.bn-wider-window"], claims["nn-lr.bn-survives-large-lr"]
    final = out.store.read_table("final")
    assert len(final) == 2 * 13 and set(final.step) == {150}
    table = windows(final, ["bn"]).set_index("bn")
    assert bn_window.holds and bn_window.measured == pytest.approx(table.loc[True, "window_0.05"])
    assert bn_window.predicted == pytest.approx(table.loc[False, "window_0.05"]) and bn_window.relation == ">"
    assert table.loc[True, "window_0.05"] > table.loc[False, "window_0.05"] + 0.1
    top = final[final.lr >= 10]
    assert top[~top.bn].diverged.all() and not top[top.bn].diverged.any()
    assert plain_diverged.holds and plain_diverged.measured == 0.0 and plain_diverged.predicted == 1.0
    assert any(p.suffix == ".png" for p in out.figures)


def test_weight_scale_shifts_bn_curves_by_the_square(tmp_path):
    overrides = {**TINY, "scales": [0.1, 1.0, 10.0], "lr_min": 1e-4, "lr_max": 1e4, "num_lr": 17}
    out = run_experiment("nn-weight-scale", tmp_path, overrides=overrides, progress=False)
    claims = {c.id: c for c in out.claims}
    for scale, shift in ((0.1, -2.0), (10.0, 2.0)):
        bn = claims[f"nn-weight-scale.bn-shift.scale-{scale:g}"]
        assert bn.predicted == pytest.approx(shift)
        assert bn.measured == pytest.approx(shift, abs=0.5 + 1e-9) and bn.holds
        control = claims[f"nn-weight-scale.no-bn-shift.scale-{scale:g}"]
        assert control.predicted == 0.0  # the control states its own expectation: no shift
        assert control.holds == (abs(control.measured) <= 0.5 + 1e-9)


def test_curve_shift_finds_a_known_shift():
    import pandas as pd

    lr = np.geomspace(1e-4, 1e4, 33)  # 0.25-decade grid
    bump = np.exp(-((np.log10(lr) - 0.0) ** 2))
    moved = np.exp(-((np.log10(lr) - 1.5) ** 2))
    curves = pd.DataFrame({"weight_scale": [1.0] * 33 + [2.0] * 33, "lr": np.r_[lr, lr], "score": np.r_[bump, moved]})
    assert curve_shift_decades(curves, 1.0, 2.0) == pytest.approx(1.5)


def test_paper_profiles_follow_the_papers_matrix():
    cfg = get("nn-lr").resolve("paper")
    assert (cfg.num_lr, cfg.seeds, cfg.steps, cfg.lr_min, cfg.lr_max, cfg.batch_size) == (40, 5, 600, 1e-3, 1e3, 100)
    assert cfg.dataset == "mnist" and cfg.model == "M1"
    assert get("nn-gamma-init").resolve("paper").gamma_inits == [1e-8, 1e-6, 1e-4, 1e-2, 1.0]
    assert get("nn-weight-scale").resolve("paper").scales == [0.01, 0.1, 1.0, 10.0]


def test_bad_configs_and_missing_data_are_clear(tmp_path):
    with pytest.raises(BnlabError, match="unknown dataset"):
        get("nn-lr").resolve("quick", {"dataset": "imagenet"})
    with pytest.raises(BnlabError, match="lr_min must be below lr_max"):
        get("nn-lr").resolve("quick", {"lr_min": 10.0, "lr_max": 1.0})
    with pytest.raises(BnlabError, match="bnlab data fetch mnist|missing"):
        run_experiment(
            "nn-lr",
            tmp_path,
            overrides={**TINY, "dataset": "mnist", "data_dir": str(tmp_path / "none")},
            progress=False,
        )
