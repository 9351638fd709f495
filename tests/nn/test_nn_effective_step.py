"""nn-effective-step on a small grid: the tracked quantities obey their definitions and the claims are computed."""

import numpy as np

from bnlab.experiments import run_experiment

SMALL = {
    "lr_min": 1e-2,
    "lr_max": 1e2,
    "num_lr": 5,
    "seeds": 1,
    "hidden": 32,
    "steps": 100,
    "log_every": 25,
    "sharpness_every": 50,
    "hvp_batches": 2,
    "lanczos_steps": 20,
    "n_test": 200,
}


def test_effective_step_tracking_small_grid(tmp_path):
    outcome = run_experiment("nn-effective-step", tmp_path, overrides=SMALL, progress=False)
    track = outcome.store.read_table("track")
    assert sorted(track.layer.unique()) == [1, 4]  # M5 with BN: both linear layers feed a BN layer
    assert np.allclose(track.eff_step, track.lr / track.w_norm**2)
    measured = track[np.isfinite(track.sharpness)]
    assert sorted(measured.step.unique()) == [0, 50, 100]
    assert np.allclose(measured.edge, measured.eff_step * measured.sharpness / 2)
    # Step 0: every network of a seed has the same weights, so the same sphere sharpness whatever its lr
    # (batched Lanczos, each network from its own random start).
    first = measured[measured.step == 0]
    for _, group in first.groupby("layer"):
        assert group.sharpness.min() > 0
        assert group.sharpness.max() / group.sharpness.min() < 1.01
    claims = {c.id: c for c in outcome.claims}
    assert claims["nn-effective-step.norm-never-decreases"].holds
    for layer in (1, 4):
        assert np.isfinite(claims[f"nn-effective-step.under-edge.layer{layer}"].measured)
        # Smallest rates: ||W|| has barely moved in 100 steps, so eff_step grows like lr.
        assert claims[f"nn-effective-step.small-lr-slope.layer{layer}"].holds
    assert (tmp_path / "nn-effective-step").exists() and len(outcome.figures) == 6
