"""Benchmark: batched BNGD over a learning-rate sweep vs a one-run-at-a-time NumPy loop with the full H.

Default workload (issue 2): 1024 learning rates x d = 100 x 2000 steps, float64. Prints the wall time, the cost
per run x dimension x step, and the speed-up over the straightforward loop measured in the same process on a
subset of runs (scaled to the full sweep). Targets on the 2-core CPU: >= 50x the loop, <= 1.5 ns per
run-dimension-step; on an H100 (``--device cuda --runs 65536``): >= 8e10 run-dimension-steps per second.

    python benchmarks/ols_sweep.py [--runs 1024] [--dim 100] [--steps 2000] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from bnlab.ols import Problem, bngd


def numpy_loop(problem: Problem, eps: np.ndarray, steps: int, w0: np.ndarray) -> np.ndarray:
    """The straightforward reference: one run at a time, full-matrix BNGD updates (SPEC section 1)."""
    H, g = problem.H, problem.g
    finals = []
    for e, w in zip(eps, w0, strict=True):
        a = 1.0
        for _ in range(steps):
            hw = H @ w
            whw = w @ hw
            norm_h = np.sqrt(whw)
            wg = w @ g
            a, w = a + (wg / norm_h - a), w + (e * a / norm_h) * (g - (wg / whw) * hw)
        finals.append(w)
    return np.array(finals)


def timed(fn, repeats: int = 1) -> float:
    best = np.inf
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--record-every", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline-runs", type=int, default=4, help="runs of the NumPy loop (scaled up)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    problem = Problem.from_spectrum(args.dim, 100.0, "linear", seed=0)
    eps = np.geomspace(1e-4, 1e8, args.runs)
    work = args.runs * args.dim * args.steps
    print(f"BNGD sweep: {args.runs} runs x d={args.dim} x {args.steps} steps = {work:.3g} run-dim-steps, float64")
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    )

    def sweep(compile_):
        return bngd(problem, eps, args.steps, record_every=args.record_every, device=args.device, compile=compile_)

    results = {}
    for label, compile_ in (("eager", False), ("compiled", True)):
        first = timed(lambda c=compile_: sweep(c))  # includes torch.compile's one-off compilation
        best = timed(lambda c=compile_: sweep(c), args.repeats)
        results[label] = best
        print(
            f"  {label:9s}: {best:8.3f} s  {best / work * 1e9:6.3f} ns/run-dim-step  "
            f"{work / best:.3g} run-dim-steps/s  (first call {first:.2f} s)"
        )

    sub = min(args.baseline_runs, args.runs)
    w0 = np.broadcast_to(np.random.default_rng(1000).standard_normal(args.dim), (sub, args.dim))
    loop_time = timed(lambda: numpy_loop(problem, eps[:sub], args.steps, w0)) * args.runs / sub
    print(
        f"  NumPy one-run-at-a-time loop (full H), {sub} runs scaled to {args.runs}: {loop_time:.1f} s  "
        f"{loop_time / work * 1e9:.1f} ns/run-dim-step"
    )
    best_label = min(results, key=results.get)
    print(
        f"speed-up over the loop: eager {loop_time / results['eager']:.0f}x, "
        f"compiled {loop_time / results['compiled']:.0f}x  (best: {best_label}, "
        f"{results[best_label] / work * 1e9:.3f} ns/run-dim-step)"
    )

    # Same answer as the loop on the subset: a benchmark of a wrong computation is worthless.
    check = bngd(problem, eps[:sub], 200, w0=w0, record_every=200, device=args.device)
    reference = numpy_loop(problem, eps[:sub], 200, w0)
    err = np.max(np.abs(check.w_final - reference) / np.linalg.norm(reference, axis=1, keepdims=True))
    print(f"check vs loop after 200 steps: max relative difference {err:.1e}")


if __name__ == "__main__":
    main()
