"""Benchmark: batched GD/BNGD over a learning-rate sweep against honest baselines, all in one run.

Workload: 1024 learning rates (geomspace(1e-4, 1e8)) x d = 100 x 2000 steps, float64, ns per run-dim-step.
BNGD paths: a NumPy loop with the full H, one run at a time (a few runs, scaled up); a vectorised NumPy loop in H's
eigenbasis (all runs at once); a plain numba loop (~25 lines, parallel over runs, sums in order, no recording);
the same with fastmath=True (reordered, vectorised sums); bnlab's ``bngd`` with its defaults (recording every step),
``record_every=100`` and end-only, and the same call forced onto the other layout of its fused loops (bnlab picks
the layout by d). GD: the eigenbasis NumPy loop, a naive numba loop, ``gd`` every step and end-only. The peak is
measured in the same run (a 2048^3 float64 matmul: 2 flops per FMA), and each path's fraction of it counts the
update rule's work (BNGD: 4 FMAs and a multiply per run-dim-step, i.e. 10 flops counted as 2 per FMA; GD: 1 mul).

    python benchmarks/ols_sweep.py [--runs 1024] [--dim 100] [--steps 2000] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import time

import numba
import numpy as np
import torch

from bnlab.ols import Problem, bngd, dynamics, gd

BNGD_FLOPS = 10  # per run-dim-step: moments (2 FMAs + 1 mul) and the update (2 FMAs)
GD_FLOPS = 1


def numpy_full_h_loop(problem: Problem, eps, steps: int, w0) -> np.ndarray:
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


def numpy_eigenbasis(lam, g, eps, steps: int, w0) -> np.ndarray:
    """Vectorised NumPy: all runs at once in H's eigenbasis, O(d) per run-step, no recording."""
    w, a = w0.copy(), np.ones(len(eps))
    for _ in range(steps):
        hw = w * lam
        wg, whw = w @ g, np.einsum("bd,bd->b", w, hw)
        norm_h = np.sqrt(whw)
        c = eps * a / norm_h
        a = a + (wg / norm_h - a)
        w = w + c[:, None] * g - (c * wg / whw)[:, None] * hw
    return w


def numpy_gd(lam, eps, steps: int, v0) -> np.ndarray:
    factor, v = 1 - eps[:, None] * lam, v0.copy()
    for _ in range(steps):
        v *= factor
    return v


def _naive(lam, g, eps, steps, w0):
    """The naive fused loop: one run per iteration of a parallel loop, state in a local vector."""
    B, d = w0.shape
    out = np.empty_like(w0)
    for b in numba.prange(B):
        w, a = w0[b].copy(), 1.0
        for _ in range(steps):
            wg, whw = 0.0, 0.0
            for i in range(d):
                wg += w[i] * g[i]
                whw += w[i] * (w[i] * lam[i])
            norm_h = math.sqrt(whw)
            c = eps[b] * a / norm_h
            ch = c * wg / whw
            a = a + (wg / norm_h - a)
            for i in range(d):
                w[i] = w[i] + c * g[i] - ch * (w[i] * lam[i])
        out[b] = w
    return out


def _naive_gd(lam, eps, steps, v0):
    """GD's naive fused loop: one run per iteration of a parallel loop, the gap summed every step."""
    B, d = v0.shape
    gaps = np.empty(B)
    for b in numba.prange(B):
        v, gap = v0[b].copy(), 0.0
        for _ in range(steps):
            gap = 0.0
            for i in range(d):
                v[i] *= 1.0 - eps[b] * lam[i]
                gap += v[i] * v[i] * lam[i]
        gaps[b] = 0.5 * gap
    return gaps


naive_fused = numba.njit(parallel=True, fastmath=False)(_naive)
naive_gd = numba.njit(parallel=True, fastmath=False)(_naive_gd)
naive_fused_fastmath = numba.njit(parallel=True, fastmath=True)(_naive)


def timed(fn, repeats: int) -> float:
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


def peak_gflops(device: str) -> float:
    n = 2048
    a = torch.randn(n, n, dtype=torch.float64, device=device)
    seconds = timed(lambda: a @ a, 5)
    return 2 * n**3 / seconds / 1e9


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline-runs", type=int, default=4, help="runs of the full-H NumPy loop (scaled up)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    problem = Problem.from_spectrum(args.dim, 100.0, "linear", seed=0)
    lam, g = problem.eigvals, problem.g_eig
    eps = np.geomspace(1e-4, 1e8, args.runs)
    w0 = np.broadcast_to(np.random.default_rng(1000).standard_normal(args.dim), (args.runs, args.dim)).copy()
    work = args.runs * args.dim * args.steps
    dev = args.device
    peak = peak_gflops(dev)
    print(f"OLS sweep: {args.runs} runs x d={args.dim} x {args.steps} steps = {work:.3g} run-dim-steps, float64")
    print(
        f"machine: {cpu_model()}, {torch.get_num_threads()} torch threads, {numba.get_num_threads()} numba threads, "
        f"torch {torch.__version__}, numba {numba.__version__}, device {dev}"
        + (f" ({torch.cuda.get_device_name()})" if dev.startswith("cuda") else "")
    )
    print(f"peak: float64 matmul 2048^3 at {peak:.1f} GFLOP/s")

    rows = []

    def row(label, seconds, flops, first=None):
        ns = seconds / work * 1e9
        frac = flops * work / seconds / 1e9 / peak
        rows.append((label, seconds, ns, frac))
        extra = f"  (first call {first:.2f} s)" if first is not None else ""
        print(f"  {label:46s} {seconds:8.3f} s  {ns:7.3f} ns/run-dim-step  {100 * frac:5.1f}% of peak{extra}")

    sub = min(args.baseline_runs, args.runs)
    if dev == "cpu":
        full_h = timed(lambda: numpy_full_h_loop(problem, eps[:sub], args.steps, w0[:sub]), 1) * args.runs / sub
        row(f"BNGD NumPy full H, one run at a time ({sub} scaled)", full_h, BNGD_FLOPS)
        row(
            "BNGD NumPy eigenbasis, vectorised",
            timed(lambda: numpy_eigenbasis(lam, g, eps, args.steps, w0), 1),
            BNGD_FLOPS,
        )
        for label, fn in (
            ("naive fused numba loop", naive_fused),
            ("naive fused numba, fastmath", naive_fused_fastmath),
        ):
            first = timed(lambda f=fn: f(lam, g, eps, args.steps, w0), 1)
            row(
                f"BNGD {label} (no recording)",
                timed(lambda f=fn: f(lam, g, eps, args.steps, w0), args.repeats),
                BNGD_FLOPS,
                first,
            )
    for label, every in (("default (record every step)", 1), ("record_every=100", 100), ("end only", args.steps)):
        call = lambda e=every: bngd(problem, eps, args.steps, w0=w0, record_every=e, device=dev)  # noqa: E731
        first = timed(call, 1)
        row(f"BNGD bnlab bngd, {label}", timed(call, args.repeats), BNGD_FLOPS, first)
    if dev == "cpu":  # the other layout of the fused loops, forced (bnlab picks it by d: dynamics.RUNS_LAYOUT_MIN_D)
        other = "blocks" if dynamics._layout(args.dim) == "runs" else "runs"
        default_min_d = dynamics.RUNS_LAYOUT_MIN_D
        dynamics.RUNS_LAYOUT_MIN_D = 10**9 if other == "blocks" else 1
        for label, every in (("default", 1), ("end only", args.steps)):
            call = lambda e=every: bngd(problem, eps, args.steps, w0=w0, record_every=e)  # noqa: E731
            first = timed(call, 1)
            row(f"BNGD bnlab bngd, {label}, {other} layout (forced)", timed(call, args.repeats), BNGD_FLOPS, first)
        dynamics.RUNS_LAYOUT_MIN_D = default_min_d
    v0 = w0 @ problem.eigvecs - problem.u_eig
    if dev == "cpu":
        row("GD NumPy eigenbasis, vectorised", timed(lambda: numpy_gd(lam, eps, args.steps, v0), 1), GD_FLOPS)
        first = timed(lambda: naive_gd(lam, eps, args.steps, v0), 1)
        row(
            "GD naive fused numba loop (gap every step)",
            timed(lambda: naive_gd(lam, eps, args.steps, v0), args.repeats),
            GD_FLOPS,
            first,
        )
    for label, every in (("default (record every step)", 1), ("end only", args.steps)):
        call = lambda e=every: gd(problem, eps, args.steps, w0=w0, record_every=e, device=dev)  # noqa: E731
        first = timed(call, 1)
        row(f"GD bnlab gd, {label}", timed(call, args.repeats), GD_FLOPS, first)

    print("\n| path | wall time | ns / run-dim-step | fraction of matmul peak |\n|---|---|---|---|")
    for label, seconds, ns, frac in rows:
        print(f"| {label} | {seconds:.3f} s | {ns:.3f} | {100 * frac:.1f}% |")

    # Same answer as the loop on a subset: a benchmark of a wrong computation is worthless.
    check = bngd(problem, eps[:sub], 200, w0=w0[:sub], record_every=200, device=dev)
    reference = numpy_full_h_loop(problem, eps[:sub], 200, w0[:sub])
    err = np.max(np.abs(check.w_final - reference) / np.linalg.norm(reference, axis=1, keepdims=True))
    print(f"\ncheck vs the full-H loop after 200 steps: max relative difference {err:.1e}")


if __name__ == "__main__":
    main()
