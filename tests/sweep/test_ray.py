"""The Ray executor: the same chunks as in-process, and a sweep that survives a killed worker
(needs `pip install 'bnlab[ray]'`; run with -m ray)."""

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from bnlab.experiments import run_experiment
from bnlab.sweep import LocalExecutor, ResultStore, run_chunks
from sweep.chunkfns import logged  # tests/ is on the path (rootdir conftest)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

TINY = ["num_eps=9", "steps=100", "seeds=3", "refine_rounds=0"]
TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"


@pytest.fixture
def ray_executor(tmp_path):
    from bnlab.sweep import RayExecutor

    pids = tmp_path / "pids"
    pids.mkdir()
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(SRC), os.environ.get("PYTHONPATH", "")]),
        "CHUNK_SLEEP": "1.5",
        "CHUNK_PIDS": str(pids),
    }
    executor = RayExecutor(
        num_cpus_per_task=1, num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, max_retries=3
    )
    try:
        yield executor, pids
    finally:
        ray.shutdown()


def test_ray_executor_matches_local_executor(tmp_path, ray_executor):
    executor, _ = ray_executor
    remote = run_experiment("convergence", tmp_path / "ray", overrides=TINY, executor=executor, progress=False)
    local = run_experiment("convergence", tmp_path / "local", overrides=TINY, executor=LocalExecutor(), progress=False)
    assert remote.store.run_id == local.store.run_id  # the executor is not part of the run identity
    pd.testing.assert_frame_equal(remote.store.read_table("final"), local.store.read_table("final"))
    assert len(list((tmp_path / "ray" / "chunks").glob("*.parquet"))) == 3


def test_a_worker_killed_mid_sweep_loses_no_chunk_and_none_is_stored_twice(tmp_path, ray_executor):
    executor, pids = ray_executor
    killed = []

    def kill_first_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for pid_file in sorted(pids.glob("*.pid")):
                pid = int(pid_file.read_text() or 0)
                if pid:
                    os.kill(pid, signal.SIGKILL)  # mid-chunk: it sleeps 1.5 s after writing its pid
                    killed.append(int(pid_file.stem))
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    run = ResultStore(tmp_path / "out").open("fault", {"n": 6})
    chunks = {f"c{i}": {"seed": i, "log": str(tmp_path / "calls.log")} for i in range(6)}
    frame = run_chunks(run, chunks, logged, executor, progress=False)
    killer.join()
    assert killed, "no worker was killed"
    assert frame.seed.tolist() == list(range(6))  # every chunk, in order
    assert sorted(run.computed) == sorted({e["key"] for e in run.manifest()})  # each stored exactly once
    assert len(run.computed) == 6 and len(list(run.pool.path.glob("*.parquet"))) == 6
    started = [int(line.split()[0]) for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert started.count(killed[0]) == 2  # the killed chunk was retried by Ray, and stored once
