"""Benchmark: the paper profile of each least-squares experiment, wall and CPU time, each in a fresh store.

What ``bnlab reproduce --profile paper --only <the 8 OLS experiments>`` spends, split per experiment: each runs as
``bnlab run NAME --profile paper`` in its own process (so the CPU time is its own: user + system of the child,
BLAS threads included) into a fresh temporary folder. Prints a markdown table. On a shared machine label the
figures as such; the CPU column is the steadier one there.

    python benchmarks/ols_paper.py [--only NAME ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bnlab.experiments.families import OLS_EXPERIMENTS as OLS


def time_one(name: str, out: Path) -> tuple[float, float, int]:
    """``(wall s, CPU s, exit status)`` of ``bnlab run NAME --profile paper --out OUT``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "bnlab.cli", "run", name, "--profile", "paper", "--out", str(out), "--no-progress"]
    status = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=OLS, help="time only this experiment (repeatable)")
    parser.add_argument("--keep", help="write the stores under this folder instead of a temporary one")
    args = parser.parse_args()
    names = args.only or list(OLS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        print("| experiment (paper profile) | wall | CPU (user + sys) |\n|---|---|---|")
        total_wall = total_cpu = 0.0
        for name in names:
            wall, cpu, status = time_one(name, root / name)
            total_wall, total_cpu = total_wall + wall, total_cpu + cpu
            note = "" if status == 0 else f" (exit {status})"
            print(f"| {name} | {wall:.0f} s{note} | {cpu:.0f} s |", flush=True)
        print(f"| total | {total_wall:.0f} s | {total_cpu:.0f} s |")


if __name__ == "__main__":
    main()
