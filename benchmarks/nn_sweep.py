"""Benchmark: per-network training throughput of ``bnlab.nn.train`` against three baselines in the same run.

For one of the SPEC's models (``--model M1 | M3 | M5``, BN on, MNIST-shaped input) and N networks with
learning rates logspace(-3, -1) (small enough that none diverges, so every network costs compute), each contender
makes the same run of every network: built from its seed, test metrics on 100 examples and the batch's train
metrics at the start, ``--steps`` SGD steps on batches of 100, the metrics again (on one more batch) at the end:
  batched   ``bnlab.nn.train`` itself, the N networks in one call
  plain     (a) one torch.nn network trained the ordinary way (torch.optim.SGD), per step
  func      (b) a torch.func ensemble of the same N networks: stack_module_state + functional_call + vmap
  conv      (c) one large convolution's forward + backward, GFLOP/s (B 100, 64 -> 64 channels, 28x28, 5x5)
A second row compares the cost of one more step, the fixed costs (initialisation, evaluations) taken out:
(T(3S) - T(S)) / 2S from runs of S and 3S steps, for batched and plain.
Throughput is network-steps per second; GFLOP/s count the nominal 3 x forward FLOPs of the architecture
(2 B prod(out) fan_in per conv/dense layer; BN, ReLU, pooling and the optimizer are not counted). Best of
``--repeats`` timings after a warm-up. Data: real MNIST from ``../shared/data/mnist`` (or ``--data-dir``) when
present, else random images of that shape (the timing does not depend on the pixels).

    python benchmarks/nn_sweep.py --model M1 [--networks 8] [--steps 10] [--device cuda] [--threads 2]
    python benchmarks/nn_sweep.py --model M5 --networks 40 --steps 50
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bnlab.errors import BnlabError
from bnlab.nn import Dataset, ModelSpec, NetConfig, batch_schedule, load_dataset, reference_module, train
from bnlab.nn.models import architecture, init_batched

SHARED_MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _best(fn, repeats: int, device: torch.device, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t = clock()
        fn()
        _sync(device)
        times.append(clock() - t)
    return min(times)


def forward_flops(spec: ModelSpec, input_shape, num_classes: int, batch: int) -> float:
    """Nominal forward FLOPs of one network on one batch: 2 B (out elements) (fan-in) per conv and dense layer."""
    flops, (h, w) = 0.0, tuple(input_shape)[-2:] if len(input_shape) == 3 else (1, 1)
    for op in architecture(spec, input_shape, num_classes):
        if op[0] == "conv":
            flops += 2 * batch * h * w * op[2] * op[1] * op[3] ** 2
        elif op[0] == "pool":
            h, w = h // 2, w // 2
        elif op[0] == "linear":
            flops += 2 * batch * op[1] * op[2]
    return flops


def conv_gflops(device, repeats: int, clock=time.perf_counter, batch=100, c=64, hw=28, k=5) -> float:
    """(c) One large 'same' convolution, forward + backward (input and weight gradients): 3 x 2 B H W C^2 k^2."""
    x = torch.randn(batch, c, hw, hw, device=device, requires_grad=True)
    w = torch.randn(c, c, k, k, device=device, requires_grad=True)

    def once():
        F.conv2d(x, w, padding=k // 2).sum().backward()

    once()
    return 3 * 2 * batch * hw * hw * c * c * k * k / _best(once, repeats, device, clock) / 1e9


def _metrics(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return F.cross_entropy(z, y), (z.argmax(1) == y).float().mean()


def _same_run(data, sched, steps, module, metrics, update) -> list:
    """The run ``train`` makes of each network: test metrics on 100 examples (``module`` in eval mode) and the
    batch's train metrics at the start, ``steps`` updates (``update(loss)``), then both again, the train ones on
    one more batch; ``metrics(x, y)`` gives (loss, accuracy) of the current parameters. Returns the logged pairs."""
    x_test, y_test = data.x_test[:100], data.y_test[:100]
    log = []
    for s in range(steps + 1):
        logged = s in (0, steps)
        if logged:
            module.eval()
            with torch.no_grad():
                log.append(metrics(x_test, y_test))
            module.train()
        with torch.set_grad_enabled(s < steps):
            loss, acc = metrics(data.x_train[sched[s]], data.y_train[sched[s]])
        if logged:
            log.append((loss.detach(), acc))
        if s < steps:
            update(loss)
    return log


def plain(spec, data, steps, batch, device):
    """(a) One torch.nn network trained the ordinary way (torch.optim.SGD), built from its seed, making the run
    of :func:`_same_run`: (run, steps per run)."""
    sched = batch_schedule(len(data.x_train), batch, steps + 1, 0).to(device)

    def run():
        ref = reference_module(spec, data.input_shape, data.num_classes, 0).to(device)
        opt = torch.optim.SGD(ref.parameters(), lr=0.01)

        def update(loss):
            opt.zero_grad()
            loss.backward()
            opt.step()

        log = _same_run(data, sched, steps, ref, lambda x, y: _metrics(ref(x), y), update)
        return [float(v) for pair in log for v in pair]

    run()
    return run, steps


def func_ensemble(spec, data, configs, steps, batch, device):
    """(b) A torch.func ensemble making the run of :func:`_same_run`: the N networks built from their seeds and
    stacked (stack_module_state), vmap of functional_call over the stacked parameters and BN buffers (the input
    batch shared), summed loss, one backward, SGD with one learning rate per network: (run, network-steps per
    run)."""
    from torch.func import functional_call, stack_module_state

    lrs = torch.tensor([c.lr for c in configs], device=device)
    sched = batch_schedule(len(data.x_train), batch, steps + 1, 0).to(device)
    base = reference_module(spec, data.input_shape, data.num_classes).to("meta")
    vmetrics = torch.vmap(
        lambda p, b, x, y: _metrics(functional_call(base, (p, b), (x,)), y),
        in_dims=(0, 0, None, None),
        randomness="different",
    )

    def run():
        refs = [reference_module(spec, data.input_shape, data.num_classes, c.seed).to(device) for c in configs]
        params, buffers = stack_module_state(refs)

        def update(losses):
            grads = torch.autograd.grad(losses.sum(), list(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads, strict=True):
                    p.sub_(lrs.view(-1, *([1] * (p.dim() - 1))) * g)

        log = _same_run(data, sched, steps, base, lambda x, y: vmetrics(params, buffers, x, y), update)
        return torch.stack([v for pair in log for v in pair]).cpu()

    run()
    return run, steps * len(configs)


def batched(spec, data, configs, steps, batch, device, group_size=None, fused=True):
    """``bnlab.nn.train`` itself, initialisation included, test metrics on 100 examples at the start and the end:
    (run, network-steps per run). ``fused=False`` runs torch's own layers (``BatchedNet.fast_cpu`` off: no fused
    first block or conv-block tails, no DFT convolutions)."""

    def run():
        model = init_batched(spec, data.input_shape, data.num_classes, [c.seed for c in configs], device=device)
        model.fast_cpu = fused
        train(
            spec,
            data,
            configs,
            steps=steps,
            batch_size=batch,
            log_every=steps,
            test_size=100,
            device=device,
            group_size=group_size,
            model=model,
        )

    train(spec, data, configs, steps=2, batch_size=batch, log_every=2, test_size=100, device=device)
    return run, steps * len(configs)


def interleaved_best(runs: dict, repeats: int, device: torch.device, clock=time.perf_counter) -> dict:
    """Seconds per unit of each (run, units): the best of ``repeats``, the runs taking turns so that a machine
    busy with other jobs slows them alike."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, (run, units) in runs.items():
            best[name] = min(best[name], _best(run, 1, device, clock) / units)
    return best


def _data(args, device) -> tuple[Dataset, str]:
    folder = Path(args.data_dir) if args.data_dir else SHARED_MNIST
    try:
        return load_dataset("mnist", folder, n_test=1000).to(device), f"MNIST from {folder.resolve()}"
    except BnlabError:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(6000, 1, 28, 28, generator=g), torch.randint(0, 10, (6000,), generator=g)
        return Dataset("random", x[:5000], y[:5000], x[5000:], y[5000:], 10).to(device), "random 1x28x28 images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="M1", choices=["M1", "M3", "M5"])
    ap.add_argument("--hidden", type=int, default=100, help="M5's width")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--networks", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings of each")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--group-size", type=int, default=None, help="networks per batched pass (default: auto)")
    ap.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files")
    ap.add_argument(
        "--clock", default="wall", choices=list(CLOCKS),
        help="wall: elapsed time; cpu: this process's CPU time (with --threads 1, robust to other jobs on a CPU)",
    )  # fmt: skip
    args = ap.parse_args()
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data, source = _data(args, device)
    spec = ModelSpec(args.model, bn=True, hidden=args.hidden)
    configs = [NetConfig(lr=float(lr), seed=i) for i, lr in enumerate(np.logspace(-3, -1, args.networks))]
    flops = 3 * forward_flops(spec, data.input_shape, data.num_classes, args.batch)

    longer = 3 * args.steps  # the per-step cost without the fixed costs: (T(3S) - T(S)) / 2S
    runs = {
        "batched": batched(spec, data, configs, args.steps, args.batch, device, args.group_size),
        "unfused": batched(spec, data, configs, args.steps, args.batch, device, args.group_size, fused=False),
        "plain": plain(spec, data, args.steps, args.batch, device),
        "func": func_ensemble(spec, data, configs, args.steps, args.batch, device),
        "batched 3S": batched(spec, data, configs, longer, args.batch, device, args.group_size),
        "plain 3S": plain(spec, data, longer, args.batch, device),
    }
    best = interleaved_best(runs, args.repeats, device, clock)
    step_b = (3 * best["batched 3S"] - best["batched"]) / 2
    step_a = (3 * best["plain 3S"] - best["plain"]) / 2
    t_b, t_a, t_f = best["batched"], best["plain"], best["func"]
    g_c = conv_gflops(device, args.repeats, clock)
    g_b = flops / t_b / 1e9
    label = f"{args.model}" + (f" (h={args.hidden})" if args.model == "M5" else "")
    print(
        f"{datetime.date.today()} {platform.machine()} torch {torch.__version__}, device {device}, "
        f"threads {torch.get_num_threads()}, {args.clock} clock; {source}"
    )
    print(
        f"{args.networks} x {label} with BN, batch {args.batch}, {args.steps} steps, "
        f"nominal {flops / 1e9:.2f} GFLOP per network-step"
    )
    print(f"batched bnlab.nn   : {1e3 * t_b:8.2f} ms / network-step  {g_b:7.1f} GFLOP/s")
    t_u = best["unfused"]
    print(f"  no CPU kernels   : {1e3 * t_u:8.2f} ms / network-step  (torch's conv, BN, ReLU, max-pool layers)")
    print(f"(a) plain torch.nn : {1e3 * t_a:8.2f} ms / step          -> batched {t_a / t_b:.2f}x (target 1.5x)")
    print(f"(b) torch.func vmap: {1e3 * t_f:8.2f} ms / network-step  -> batched {t_f / t_b:.2f}x (target 1.5x)")
    print(
        f"    per added step : batched {1e3 * step_b:6.2f}, plain {1e3 * step_a:6.2f} ms (from {args.steps} and "
        f"{longer} steps: the runs' fixed costs taken out) -> batched {step_a / step_b:.2f}x"
    )
    print(f"(c) large conv     : {g_c:8.1f} GFLOP/s fwd+bwd       -> batched at {100 * g_b / g_c:.0f}% (target 60%)")


if __name__ == "__main__":
    main()
