"""Benchmark: a 40-learning-rate sweep of M5 (784 -> 100 -> 10, BN) batched vs trained one network at a time.

Random 784-dimensional inputs, batch 100, 50 SGD steps. Prints both wall times, their ratio, the batched sweep's
achieved GFLOP/s (nominal dense-layer count 6 N B (784 h + 10 h) per step, forward + backward) and the GFLOP/s
of a large float32 matrix product (2 n^3 per product) measured in the same run.

    python benchmarks/nn_sweep.py [--device cuda] [--networks 40] [--steps 50] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bnlab.nn import Dataset, ModelSpec, NetConfig, batch_schedule, reference_module, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def sequential(spec, data, configs, steps, batch, device) -> float:
    """The same networks trained one after another with torch.nn and torch.optim.SGD on the same batches."""
    sched = batch_schedule(len(data.x_train), batch, steps, 0).to(device)
    refs = [reference_module(spec, data.input_shape, data.num_classes, c.seed).to(device) for c in configs]
    _sync(device)
    t = time.perf_counter()
    for ref, cfg in zip(refs, configs, strict=True):
        opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr)
        for s in range(steps):
            loss = torch.nn.functional.cross_entropy(ref(data.x_train[sched[s]]), data.y_train[sched[s]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    _sync(device)
    return time.perf_counter() - t


def batched(spec, data, configs, steps, batch, device) -> float:
    """``bnlab.nn.train`` itself, logging only at the start and the end (test metrics on 100 examples)."""
    _sync(device)
    t = time.perf_counter()
    train(spec, data, configs, steps=steps, batch_size=batch, log_every=steps, test_size=100, device=device)
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--networks", type=int, default=40)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings of each")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 784, generator=g)
    y = torch.randint(0, 10, (5000,), generator=g)
    data = Dataset("random", x[:4000], y[:4000], x[4000:], y[4000:], 10).to(device)
    spec = ModelSpec("M5", bn=True, hidden=args.hidden)
    configs = [NetConfig(lr=float(lr), seed=i) for i, lr in enumerate(np.logspace(-3, 3, args.networks))]

    batched(spec, data, configs, 3, args.batch, device)  # warm-up (allocator, kernels)
    sequential(spec, data, configs[:2], 3, args.batch, device)
    t_batched = min(batched(spec, data, configs, args.steps, args.batch, device) for _ in range(args.repeats))
    t_seq = min(sequential(spec, data, configs, args.steps, args.batch, device) for _ in range(args.repeats))
    mm = max(matmul_gflops(device) for _ in range(args.repeats))
    h = args.hidden
    flops = 6 * args.networks * args.batch * (784 * h + h * 10) * args.steps
    rate = flops / t_batched / 1e9
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    print(f"{args.networks} networks x M5 (h={h}, BN), batch {args.batch}, {args.steps} steps")
    print(f"sequential torch.nn : {t_seq:.3f} s")
    print(f"batched bnlab.nn    : {t_batched:.3f} s")
    print(f"speed-up            : {t_seq / t_batched:.2f}x")
    print(f"batched GFLOP/s     : {rate:.1f} (nominal 6 N B (784 h + 10 h) per step)")
    print(f"matmul 2048 GFLOP/s : {mm:.1f}  -> batched at {100 * rate / mm:.0f}% of it")


if __name__ == "__main__":
    main()
