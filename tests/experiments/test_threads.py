"""A least-squares experiment must not change the thread count the network experiments after it run with."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = """
import sys, torch
from bnlab.experiments import run_experiment
overrides = {"d": 5, "num_eps": 9, "seeds": 1, "steps": 50, "tol": 0.01}
run_experiment("lr-robustness", sys.argv[1], overrides=overrides, progress=False)
print(torch.get_num_threads())
"""


def test_numba_pool_start_leaves_torch_on_the_thread_count_it_had(tmp_path):
    # A fresh process: numba's OpenMP pool starts (and sets libgomp's thread count to every core) only once.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "1"
