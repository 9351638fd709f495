"""Benchmark: the fused first block ``bnlab.nn.inputblock.conv_bn_relu_pool`` against its two baselines, per shape.

A CNN's first block, conv (shared input, 'same' padding) -> BN (training mode) -> ReLU -> 2x2 max pool, forward +
``autograd.grad`` for the conv and BN parameters (the input is data: no gradient), batch 100, three ways:
  block     ``conv_bn_relu_pool``: one pass, the conv's output never written (what ``BatchedNet`` runs on the CPU
            where ``input_block_pays``: D = C_in k^2 <= ``MAX_TAPS``)
  unfused   ``F.conv2d`` (oneDNN) then ``bnlab.nn.fused.bn_relu_pool``: what runs where the block does not pay
  torch     ``F.conv2d``, ``F.batch_norm``, ``torch.relu``, ``F.max_pool2d``: torch's own layers
``block`` reads the same input tensor every call, as every group of networks of a training step does (its patch
moments and input layout are derived once per batch); ``block, new batch`` gives it a fresh tensor each call, as
the first group of a step sees. Wall time at torch's thread count, best of ``--repeats`` rounds of ``--iters``
calls, the contenders alternating round by round so that all see the same load.

    python benchmarks/input_block.py [--threads 2] [--repeats 5] [--iters 5] [--dtype float32]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch
import torch.nn.functional as F

from bnlab.nn.fused import bn_relu_pool
from bnlab.nn.inputblock import MAX_TAPS, conv_bn_relu_pool

# name: (C_in, H, W, k, C_out): the SPEC's first blocks and one shape between them
SHAPES = {
    "M3 (MNIST, 3x3, D 9)": (1, 28, 28, 3, 32),
    "M1 (MNIST, 5x5, D 25)": (1, 28, 28, 5, 32),
    "M3 (CIFAR-10, 3x3, D 27)": (3, 32, 32, 3, 32),
    "M1 (CIFAR-10, 5x5, D 75)": (3, 32, 32, 5, 64),
}


def _contenders(shape, dtype, batch=100):
    c_in, h, w, k, c = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, h, w, generator=gen, dtype=dtype)
    params = [
        (torch.randn(c, c_in, k, k, generator=gen, dtype=dtype) / k).requires_grad_(),
        torch.zeros(c, dtype=dtype, requires_grad=True),
        torch.ones(c, dtype=dtype, requires_grad=True),
        torch.zeros(c, dtype=dtype, requires_grad=True),
    ]
    grad = torch.randn(batch, c, h // 2, w // 2, generator=gen, dtype=dtype)

    def stats():
        return torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)

    def block(xb):
        return conv_bn_relu_pool(xb, *params, *stats(), True)

    def unfused(xb):
        return bn_relu_pool(F.conv2d(xb, params[0], params[1], padding=k // 2), *params[2:], *stats(), True)

    def plain(xb):
        z = F.batch_norm(F.conv2d(xb, params[0], params[1], padding=k // 2), *stats(), *params[2:], True)
        return F.max_pool2d(torch.relu(z), 2)

    def timed(fn, fresh=False):
        def once():
            xb = x.clone() if fresh else x
            torch.autograd.grad(fn(xb), params, grad)

        return once

    return {
        "block": timed(block),
        "block, new batch": timed(block, fresh=True),
        "unfused": timed(unfused),
        "torch": timed(plain),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(
        f"{datetime.date.today()} {platform.machine()} torch {torch.__version__}, {args.threads} threads, "
        f"{args.dtype}, batch 100, forward + parameter gradients, ms per call (best of {args.repeats} x "
        f"{args.iters}); the block runs where D <= {MAX_TAPS}"
    )
    for name, shape in SHAPES.items():
        runs = _contenders(shape, dtype)
        for fn in runs.values():  # warm-up: numba compilation, oneDNN primitives
            fn()
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeats):
            for key, fn in runs.items():
                t = time.perf_counter()
                for _ in range(args.iters):
                    fn()
                best[key] = min(best[key], (time.perf_counter() - t) / args.iters)
        ms = {key: 1e3 * v for key, v in best.items()}
        print(
            f"{name:26s} block {ms['block']:6.2f} (new batch {ms['block, new batch']:6.2f})  unfused "
            f"{ms['unfused']:6.2f}  torch {ms['torch']:6.2f}  -> block {ms['unfused'] / ms['block']:.2f}x unfused, "
            f"{ms['torch'] / ms['block']:.2f}x torch"
        )


if __name__ == "__main__":
    main()
