"""The Ray executor computes the same chunks as the in-process one (needs `pip install bnlab[ray]`)."""

import pandas as pd
import pytest

from bnlab.experiments import run_experiment
from bnlab.sweep import LocalExecutor

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

TINY = ["num_eps=9", "steps=100", "seeds=3", "refine_rounds=0"]


def test_ray_executor_matches_local_executor(tmp_path):
    from bnlab.sweep import RayExecutor

    executor = RayExecutor(num_cpus_per_task=0.5)
    try:
        remote = run_experiment("convergence", tmp_path / "ray", overrides=TINY, executor=executor, progress=False)
    finally:
        ray.shutdown()
    local = run_experiment("convergence", tmp_path / "local", overrides=TINY, executor=LocalExecutor(), progress=False)
    assert remote.store.run_id == local.store.run_id  # the executor is not part of the run identity
    a, b = remote.store.read_table("final"), local.store.read_table("final")
    pd.testing.assert_frame_equal(a, b)
    assert len(list((remote.store.path / "chunks").glob("*.parquet"))) == 3
