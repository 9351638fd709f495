"""The registered network experiments on tiny configs: their verdicts and numbers."""

import numpy as np
import pytest

from bnlab import BnlabError
from bnlab.experiments import get, run_experiment
from bnlab.experiments.nn_common import seed_widths, seed_windows, windows
from bnlab.experiments.nn_sweeps import curve_shift_decades

TINY = {"hidden": 32, "num_lr": 13, "seeds": 1, "steps": 150, "log_every": 50, "n_test": 500}


def test_lr_sweep_bn_window_is_wider_and_plain_network_diverges(tmp_path):
    out = run_experiment("nn-lr", tmp_path, overrides=TINY, progress=False)
    claims = {c.id: c for c in out.claims}
    bn_window, plain_diverged = claims["nn-lr.bn-wider-window"], claims["nn-lr.bn-survives-large-lr"]
    final = out.store.read_table("final")
    assert len(final) == 2 * 13 and set(final.step) == {150}
    table = windows(final, ["bn"]).set_index("bn")
    # One seed: the per-seed difference is the difference of the (one-seed) curves' windows, a zero-width interval.
    gap = table.loc[True, "window_0.05"] - table.loc[False, "window_0.05"]
    assert bn_window.holds and bn_window.measured == pytest.approx(gap) and bn_window.relation == ">"
    assert bn_window.predicted == 0.0 and bn_window.ci_low == bn_window.ci_high == pytest.approx(gap)
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


def _final(widths_bn, widths_plain):
    """A final table whose seed s has accuracy 0.9 on the first ``width`` rates of a 1-decade grid, else 0.1."""
    import pandas as pd

    lrs = np.logspace(-3, 3, 7)
    rows = []
    for bn, widths in ((True, widths_bn), (False, widths_plain)):
        for seed, w in enumerate(widths):
            for i, lr in enumerate(lrs):
                acc = 0.9 if i <= w else 0.1
                rows.append({"bn": bn, "seed": seed, "lr": lr, "test_acc": acc, "end_acc": acc, "diverged": False})
    return pd.DataFrame(rows)


def test_end_of_training_accuracy_averages_the_last_evaluations_and_zeroes_diverged_networks():
    import pandas as pd

    from bnlab.experiments.nn_common import end_of_training

    # Two chunks with a network 0 each (net numbers repeat across chunks); chunk b's network diverged at step 90.
    steps = [0, 50, 80, 90, 100]
    history = pd.DataFrame(
        [
            {"chunk": "a", "net": 0, "step": t, "test_acc": acc, "diverged": False}
            for t, acc in zip(steps, [0.1, 0.5, 0.6, 0.9, 0.6], strict=True)
        ]
        + [{"chunk": "b", "net": 0, "step": t, "test_acc": 0.8, "diverged": t >= 90} for t in steps]
    )
    final = end_of_training(history, 100, 0.2).set_index("chunk")
    assert final.end_acc["a"] == pytest.approx(0.7)  # steps 80, 90, 100
    assert final.end_acc["b"] == 0.0 and final.test_acc["a"] == 0.6  # the snapshot column is kept as it was
    assert end_of_training(history, 100, 0.0).set_index("chunk").end_acc["a"] == pytest.approx(0.6)


def test_windows_per_seed_and_the_verdict_needs_the_interval_above_zero():
    from bnlab.experiments.nn_sweeps import _bn_vs_plain_claims

    cfg = get("nn-lr").resolve("quick", {"seeds": 4, "tol": 0.05})
    sure = _final([4, 4, 5, 4], [2, 2, 2, 3])
    # Each seed's window runs over its good rates (1 decade apart) plus the interpolated edges into the bad ones.
    per = seed_windows(sure, ["bn"], 0.05).set_index(["bn", "seed"]).width
    assert per[True, 0] > per[False, 0] and seed_widths(sure, 0.05, bn=True).shape == (4,)
    claim = _bn_vs_plain_claims(cfg, sure, "nn-lr.bn-wider-window", "toy")[0]
    assert claim.holds and claim.ci_low > 0 and claim.measured == pytest.approx(np.mean(per[True] - per[False]))
    # One seed where BN is narrower: the mean is still positive, but the interval reaches below zero.
    unsure = _final([4, 4, 5, 1], [2, 2, 2, 3])
    claim = _bn_vs_plain_claims(cfg, unsure, "nn-lr.bn-wider-window", "toy")[0]
    assert claim.measured > 0 and claim.ci_low < 0 and not claim.holds


def test_mnist_profile_runs_every_network_experiment_on_mnist():
    from bnlab.experiments import REGISTRY

    sweeps = ("nn-lr", "nn-bn-lr", "nn-weight-scale", "nn-width", "nn-gamma-init", "nn-optimizer")
    assert set(sweeps) <= set(REGISTRY)
    for name in sweeps:
        cfg = get(name).resolve("mnist")
        assert cfg.dataset == "mnist" and cfg.lr_min <= 1e-3 and cfg.seeds >= 2, name
        if cfg.model in ("M2", "M5") and name != "nn-width":  # the MLPs at the paper's grid
            assert (cfg.num_lr, cfg.seeds, cfg.steps, cfg.log_every) == (get(name).resolve("paper").num_lr, 5, 600, 10)


def test_bn_parameter_figure_draws_the_plain_baseline_once(monkeypatch):
    """The no-BN networks report bn_lr = lr; they are one series 'no BN', not one series per rate."""
    import pandas as pd

    from bnlab.experiments import nn_common

    final = _final([4, 4], [2, 2]).assign(test_loss=1.0)
    bn, plain = final[final.bn], final[~final.bn].assign(bn_lr=lambda f: f.lr)
    final = pd.concat([bn.assign(bn_lr=1.0), bn.assign(bn_lr=0.1), plain], ignore_index=True)
    figures = []
    monkeypatch.setattr(nn_common, "save", lambda fig, folder, name: figures.append(fig) or [])
    nn_common.plot_curves(final, None, "f", "M1 on mnist", hue="bn_lr", hue_label="bn_lr", tol=0.05, plain_once=True)
    labels = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert labels == ["no BN", "BN, bn_lr=0.1", "BN, bn_lr=1"]
    assert len(figures[0].axes[0].patches) >= 3  # a shaded window per series


def test_gamma_init_sweeps_the_weights_rate_with_gamma_on_a_fixed_rate(tmp_path):
    overrides = {**TINY, "num_lr": 5, "steps": 20, "log_every": 10, "gamma_inits": [1e-8, 1.0], "bn_lr": 0.5}
    out = run_experiment("nn-gamma-init", tmp_path, overrides=overrides, progress=False)
    final = out.store.read_table("final")
    bn = final[final.bn]
    assert sorted(bn.gamma_init.unique()) == [1e-8, 1.0] and (bn.bn_lr == 0.5).all()
    assert bn.lr.nunique() == 5 and len(final[~final.bn]) == 5  # one plain baseline, not one per gamma
    assert [c.id for c in out.claims] == ["nn-gamma-init.bn-robust"]
