"""Benchmark: ``bnlab.nn.fftconv.conv2d_same`` against ``F.conv2d(padding=k//2)``, forward + backward, per shape.

Shapes (batch 100, the SPEC's models): M1 conv1 (shared input, weight gradient only), M1 conv2, M1's CIFAR
variant conv2, M3's 3x3 conv2, and two off-grid shapes, and M1 conv2 for 8 networks stacked as
groups=8 (as bnlab.nn.layers runs them). Each timing is the CPU time of the calling thread
(``time.thread_time``: steadier than wall time on a shared machine) at ``--threads 1``, wall time otherwise
(thread time would miss the worker threads), for one forward and one ``autograd.grad`` call, best of ``--repeats``
rounds of ``--iters`` calls, the two paths alternating round by round so that both see the same load. GFLOP/s
count the direct convolution's nominal ``2 B C O k^2 H W`` per pass (3 passes, or 2 without grad_x) for both
paths, so the dft column reads as an equivalent rate. ``--parts`` adds the dft path's time per stage on M1 conv2.

    python benchmarks/conv_fft.py [--threads 1] [--repeats 5] [--iters 5] [--dtype float32] [--parts]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from bnlab.nn import fftconv

# name: (B, C_in, C_out, H, W, k, grad_x needed, groups); C_in, C_out count all groups' channels
SHAPES = {
    "M1 conv1 (MNIST)": (100, 1, 32, 28, 28, 5, False, 1),
    "M1 conv2 (MNIST)": (100, 32, 64, 14, 14, 5, True, 1),
    "M1 conv2 (CIFAR)": (100, 64, 64, 16, 16, 5, True, 1),
    "M3 conv2 3x3": (100, 32, 64, 14, 14, 3, True, 1),
    "16->16 14x14 5x5": (100, 16, 16, 14, 14, 5, True, 1),
    "64->64 8x8 5x5": (100, 64, 64, 8, 8, 5, True, 1),
    "M1 conv2 x8 groups": (100, 8 * 32, 8 * 64, 14, 14, 5, True, 8),  # 8 stacked networks (bnlab.nn.layers)
}


def _step(conv, x, w, b, g, inputs):
    return torch.autograd.grad(conv(x, w, b), inputs, g)


def _clock() -> float:
    """Thread CPU time on one thread; wall time when torch's worker threads share the work."""
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def time_shape(shape, dtype, repeats: int, iters: int) -> tuple[float, float]:
    """Best-of-repeats ms per forward + backward for (F.conv2d, conv2d_same)."""
    nb, ci, co, h, wd, k, need_x, groups = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(nb, ci, h, wd, dtype=dtype, generator=gen, requires_grad=need_x)
    w = torch.randn(co, ci // groups, k, k, dtype=dtype, generator=gen, requires_grad=True)
    b = torch.randn(co, dtype=dtype, generator=gen, requires_grad=True)
    g = torch.randn(nb, co, h, wd, dtype=dtype, generator=gen)
    inputs = [x, w, b] if need_x else [w, b]
    paths = {
        "direct": lambda x, w, b: F.conv2d(x, w, b, padding=k // 2, groups=groups),
        "dft": lambda x, w, b: fftconv.conv2d_same(x, w, b, groups),
    }
    best = {name: float("inf") for name in paths}
    for conv in paths.values():  # warm-up (plans, allocator)
        _step(conv, x, w, b, g, inputs)
    for _ in range(repeats):
        for name, conv in paths.items():
            t0 = _clock()
            for _ in range(iters):
                _step(conv, x, w, b, g, inputs)
            best[name] = min(best[name], (_clock() - t0) / iters * 1e3)
    return best["direct"], best["dft"]


def time_parts(dtype, repeats: int, iters: int) -> dict[str, float]:
    """ms per stage of conv2d_same on M1 conv2, in the order one forward + backward runs them. The mixing stages
    return conv2d_same's per-thread scratch buffer, so each result is read only by the stage right after it."""
    nb, ci, co, h, wd, k, _, _ = SHAPES["M1 conv2 (MNIST)"]
    x = torch.randn(nb, ci, h, wd, dtype=dtype)
    w = torch.randn(co, ci, k, k, dtype=dtype)
    g = torch.randn(nb, co, h, wd, dtype=dtype)
    plan = fftconv._plan(h, wd, k, dtype)
    stages = {
        "forward DFT of x": lambda s: fftconv._forward_dft(x, plan),
        "DFT of w": lambda s: fftconv._weight_dft(w, plan),
        "mixing y = X Wc": lambda s: fftconv._mix(s["forward DFT of x"], s["DFT of w"].transpose(2, 3), False, False),
        "inverse DFT of y": lambda s: fftconv._inverse_dft(s["mixing y = X Wc"], plan, g.new_empty(g.shape)),
        "forward DFT of g": lambda s: fftconv._forward_dft(g, plan),
        "mixing gx = G conj(Wc)^T": lambda s: fftconv._mix(s["forward DFT of g"], s["DFT of w"], False, True),
        "inverse DFT of gx": lambda s: fftconv._inverse_dft(s["mixing gx = G conj(Wc)^T"], plan, x.new_empty(x.shape)),
        "mixing gw = conj(G)^T X": lambda s: fftconv._mix(
            s["forward DFT of g"].transpose(2, 3), s["forward DFT of x"], True, False
        ),
        "inverse DFT of gw": lambda s: fftconv._weight_grad(s["mixing gw = conj(G)^T X"], k, plan),
    }
    best = {name: float("inf") for name in stages}
    for _ in range(repeats):
        total = dict.fromkeys(stages, 0.0)
        for _ in range(iters):
            state = {}
            for name, fn in stages.items():
                t0 = _clock()
                state[name] = fn(state)
                total[name] += _clock() - t0
        for name in stages:
            best[name] = min(best[name], total[name] / iters * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per path (best is kept)")
    parser.add_argument("--iters", type=int, default=5, help="forward + backward calls per round")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--parts", action="store_true", help="also time each stage of the dft path on M1 conv2")
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1 or args.iters < 1:
        parser.exit(2, "conv_fft: --threads, --repeats and --iters must be at least 1\n")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.dtype}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{'thread CPU' if args.threads == 1 else 'wall'} ms per fwd+bwd")  # fmt: skip
    print(f"{'shape':20s} {'direct':>8s} {'dft':>8s} {'speedup':>8s} {'model':>6s} {'direct GF/s':>12s} {'pays':>5s}")
    for name, shape in SHAPES.items():
        nb, ci, co, h, wd, k, need_x, groups = shape
        direct, dft = time_shape(shape, dtype, args.repeats, args.iters)
        gflop = (3 if need_x else 2) * 2 * nb * ci * co // groups * k * k * h * wd / 1e9
        model = fftconv.predicted_speedup(ci // groups, co // groups, h, wd, k, dtype)
        pays = fftconv.fft_pays(ci // groups, co // groups, h, wd, k, dtype)
        print(f"{name:20s} {direct:8.2f} {dft:8.2f} {direct / dft:7.2f}x {model:5.2f}x {gflop / direct * 1e3:12.0f}"
              f" {pays!s:>5s}")  # fmt: skip
    if args.parts:
        parts = time_parts(dtype, args.repeats, args.iters)
        print(f"# dft stages on M1 conv2 (sum {sum(parts.values()):.2f} ms)")
        for name, ms in parts.items():
            print(f"{name:28s} {ms:6.2f}")


if __name__ == "__main__":
    main()
