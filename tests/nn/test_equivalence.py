"""Batched networks reproduce N torch.nn networks trained one at a time from the same weights on the same batches."""

import copy

import pandas as pd
import pytest
import torch

from bnlab.nn import BatchedNet, Dataset, ModelSpec, NetConfig, batch_schedule, init_batched, reference_module, train

STEPS = 50
BATCH = 16


def _data(shape: tuple[int, ...], n_train: int = 96, n_test: int = 40, classes: int = 10) -> Dataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n_train + n_test, *shape, generator=g)
    # Labels from a random linear teacher: learnable, so the trajectories are smooth rather than memorising noise.
    y = (x.flatten(1) @ torch.randn(x[0].numel(), classes, generator=g)).argmax(1)
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def _ref_loss(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "cross_entropy":
        return torch.nn.functional.cross_entropy(out, y)
    onehot = torch.nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
    return (torch.softmax(out, 1) - onehot).pow(2).sum(1).mean()


def _torch_optimizer(ref: torch.nn.Module, cfg: NetConfig) -> torch.optim.Optimizer:
    bn = [p for m in ref.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for p in m.parameters()]
    ids = {id(p) for p in bn}
    other = [p for p in ref.parameters() if id(p) not in ids]
    groups = [{"params": other, "lr": cfg.lr}]
    if bn:
        groups.append({"params": bn, "lr": cfg.lr if cfg.bn_lr is None else cfg.bn_lr})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    return torch.optim.SGD(groups)


def _run_both(spec: ModelSpec, data: Dataset, configs: list[NetConfig], dtype: torch.dtype):
    """Train the batched net and, one at a time, its torch.nn twins; return both loss curves and eval outputs."""
    refs = [
        reference_module(spec, data.input_shape, data.num_classes, c.seed, c.weight_scale, c.gamma_init).to(dtype)
        for c in configs
    ]
    net = BatchedNet.from_modules(spec, data.input_shape, data.num_classes, copy.deepcopy(refs))
    res = train(
        spec,
        data,
        configs,
        steps=STEPS,
        batch_size=BATCH,
        log_every=1,
        test_size=None,
        model=net,
        dtype=dtype,
        data_seed=7,
    )
    batched = torch.tensor(res.history.pivot(index="step", columns="net", values="train_loss").to_numpy())
    d = data.to("cpu", dtype)
    sched = batch_schedule(len(d.x_train), BATCH, STEPS + 1, 7)
    ref_losses = torch.zeros(STEPS, len(configs), dtype=torch.float64)
    for k, (ref, cfg) in enumerate(zip(refs, configs, strict=True)):
        opt = _torch_optimizer(ref, cfg)
        ref.train()
        for t in range(STEPS):
            loss = _ref_loss(ref(d.x_train[sched[t]]), d.y_train[sched[t]], spec.loss)
            ref_losses[t, k] = loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        net.eval()
        out_b = net(d.x_test)
        out_r = torch.stack([r.eval()(d.x_test) for r in refs], 1)
    return batched[:STEPS], ref_losses, out_b, out_r, res


CASES = [
    ("M2", False, (20,)),
    ("M2", True, (20,)),
    ("M4", False, (20,)),
    ("M4", True, (20,)),
    ("M5", False, (20,)),
    ("M5", True, (20,)),
    ("M1", False, (1, 8, 8)),
    ("M1", True, (1, 8, 8)),
    ("M1", True, (3, 8, 8)),
    ("M3", False, (1, 8, 8)),
    ("M3", True, (1, 8, 8)),
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest relative difference over networks, per step."""
    return ((a - b).abs() / b.abs()).max(1).values


@pytest.mark.parametrize(("kind", "bn", "shape"), CASES)
def test_batched_sgd_matches_torch_nn_float64(kind, bn, shape):
    spec = ModelSpec(kind, bn=bn, hidden=16)
    lrs = [0.02, 0.05, 0.1] if bn else [0.01, 0.02, 0.05]
    configs = [NetConfig(lr=lr, seed=10 + i) for i, lr in enumerate(lrs[1:] if kind in ("M1", "M3") else lrs)]
    batched, ref, out_b, out_r, res = _run_both(spec, _data(shape), configs, torch.float64)
    assert not res.networks.diverged.any()
    err = _rel(batched, ref).max().item()
    print(f"{kind} bn={bn} {shape}: max relative loss error {err:.2e}")
    assert err < 1e-9
    # Eval mode (running statistics) after training gives the same outputs.
    assert (out_b - out_r).abs().max().item() < 1e-8 * max(out_r.abs().max().item(), 1.0)


# Float32 allowance: the median network's batched float32 run may stray from the exact (float64) trajectory at most
# DRIFT_FACTOR times as far as the median network's torch.nn float32 run does, plus FLOOR (a few float32 ulps).
DRIFT_FACTOR, FLOOR = 10.0, 1e-5


@pytest.mark.parametrize(("kind", "bn", "shape"), CASES)
def test_batched_float32_is_as_faithful_as_torch_nn_float32(kind, bn, shape):
    """Float32 is judged against float64, not against another float32 run. Max pooling and ReLU switch branches at
    near-ties, so float32 round-off can move a CNN with BN onto a neighbouring trajectory: measured here, some
    networks of either implementation hop (relative loss error 1e-4..1e-2 within 50 steps), which ones depends on
    the seed and on summation order, and two float32 implementations then part. So each implementation's
    fidelity is the median over 8 networks of its largest error against float64: hops of a minority leave the
    median at round-off, while a real defect (a wrong rate, mixed-up networks, a BN statistic over the wrong
    axis) moves every network by O(1e-3) or more within a few steps."""
    spec = ModelSpec(kind, bn=bn, hidden=16)
    cnn = kind in ("M1", "M3")
    lrs = [0.005, 0.01] * (4 if bn else 1) if cnn else ([0.02, 0.05, 0.1] if bn else [0.01, 0.02, 0.05])
    configs = [NetConfig(lr=lr, seed=10 + i) for i, lr in enumerate(lrs)]
    data = _data(shape)
    b32, r32, *_, res = _run_both(spec, data, configs, torch.float32)
    _, r64, *_ = _run_both(spec, data, configs, torch.float64)
    assert not res.networks.diverged.any()
    err_b = ((b32 - r64).abs() / r64.abs()).max(0).values  # per network, over steps
    err_r = ((r32 - r64).abs() / r64.abs()).max(0).values
    med_b, med_r = err_b.median().item(), err_r.median().item()
    print(f"{kind} bn={bn} {shape}: median error batched {med_b:.2e}, torch.nn {med_r:.2e}; per network")
    print("  batched ", " ".join(f"{e:.0e}" for e in err_b.tolist()))
    print("  torch.nn", " ".join(f"{e:.0e}" for e in err_r.tolist()))
    assert med_b <= DRIFT_FACTOR * med_r + FLOOR
    # Not vacuous: the first loss (a forward pass from the same weights) is within a few ulps of float64.
    assert ((b32[0] - r64[0]).abs() / r64[0].abs()).max().item() < 1e-6


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_bn_learning_rate_and_adam_match_torch_optim(optimizer):
    spec = ModelSpec("M5", bn=True, hidden=16)
    if optimizer == "sgd":  # separate BN-parameter rate = torch.optim.SGD param groups
        configs = [NetConfig(lr=0.05, bn_lr=b, seed=i) for i, b in enumerate([10.0, 1.0, 0.01, 0.0])]
    else:  # per-network Adam hyperparameters
        configs = [
            NetConfig(lr=1e-3, optimizer="adam", seed=0),
            NetConfig(lr=3e-3, bn_lr=1e-2, optimizer="adam", beta1=0.8, beta2=0.99, adam_eps=1e-6, seed=1),
        ]
    batched, ref, out_b, out_r, _ = _run_both(spec, _data((20,)), configs, torch.float64)
    err = ((batched - ref).abs() / ref.abs()).max().item()
    print(f"{optimizer}: max relative loss error {err:.2e}")
    assert err < 1e-9
    assert torch.allclose(out_b, out_r, rtol=1e-8, atol=1e-9)


def test_mixed_sgd_and_adam_in_one_batch_equal_separate_runs():
    spec = ModelSpec("M5", bn=True, hidden=16)
    data = _data((20,))
    sgd, adam = NetConfig(lr=0.05, seed=3), NetConfig(lr=1e-3, optimizer="adam", seed=4)
    both = train(spec, data, [sgd, adam], steps=20, batch_size=BATCH, dtype=torch.float64).history
    alone = [train(spec, data, [c], steps=20, batch_size=BATCH, dtype=torch.float64).history for c in (sgd, adam)]
    for k in range(2):
        a = both[both.net == k].train_loss.to_numpy()
        b = alone[k].train_loss.to_numpy()
        assert abs(a - b).max() < 1e-12


def test_export_roundtrip_and_seeded_init():
    spec = ModelSpec("M3", bn=True)
    data = _data((1, 8, 8))
    net = train(spec, data, [NetConfig(lr=0.05, seed=s) for s in (1, 2)], steps=3, batch_size=BATCH).model
    back = BatchedNet.from_modules(spec, data.input_shape, 10, net.to_modules())
    for (name, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # A network's initial weights depend on its own seed only, not on its position in the batch.
    one = init_batched(spec, data.input_shape, 10, [2])
    two = init_batched(spec, data.input_shape, 10, [1, 2], weight_scales=[1.0, 1.0])
    assert torch.equal(one.layers[0].weight[0], two.layers[0].weight[1])
    scaled = init_batched(spec, data.input_shape, 10, [2], weight_scales=[0.1], gamma_inits=[0.5])
    assert torch.allclose(scaled.layers[0].weight, 0.1 * one.layers[0].weight)
    assert torch.equal(scaled.layers[0].bias, one.layers[0].bias)
    assert torch.all(scaled.layers[1].weight == 0.5)


@pytest.mark.parametrize("kind", ["M1", "M3", "M5"])
def test_batched_init_draws_each_reference_network(kind):
    """init_batched draws into each network's slice what reference_module draws for that seed, bit for bit."""
    spec, shape = ModelSpec(kind, bn=True, hidden=7), (1, 12, 12)
    seeds, scales, gammas = [5, 0, 5], [1.0, 0.3, 2.0], [1.0, 0.5, -1.0]
    net = init_batched(spec, shape, 10, seeds, scales, gammas, dtype=torch.float64)
    refs = [reference_module(spec, shape, 10, *args).double() for args in zip(seeds, scales, gammas, strict=True)]
    stacked = BatchedNet.from_modules(spec, shape, 10, refs)
    for (name, a), (_, b) in zip(net.state_dict().items(), stacked.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_groups_and_dropped_networks_change_nothing():
    """Running the networks one group after another, and dropping diverged ones from the batch, gives the numbers
    of one stacked pass (float64), for SGD and Adam networks alike, BN statistics and Adam moments included."""
    spec = ModelSpec("M3", bn=True)
    data = _data((1, 8, 8))
    configs = [
        NetConfig(lr=0.05, seed=0),
        NetConfig(lr=1e7, seed=1),  # diverges within a few steps and is dropped
        NetConfig(lr=1e-3, optimizer="adam", seed=2),
        NetConfig(lr=0.1, bn_lr=0.01, seed=3),
        NetConfig(lr=3e5, optimizer="adam", seed=4),
    ]
    kw = dict(steps=12, batch_size=BATCH, log_every=3, dtype=torch.float64, test_size=None)
    runs = {g: train(spec, data, configs, group_size=g, **kw) for g in (1, 2, 5)}
    assert runs[5].networks.diverged.tolist() == [False, True, False, False, True]
    for g in (1, 2):
        a, b = runs[g].history, runs[5].history
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-10, atol=1e-12)
        # Final states of the surviving networks (the diverged ones froze after one step at rate 1e7 / 3e5, which
        # magnifies round-off; Adam magnifies the round-off gradient of conv biases feeding BN, zero in exact math).
        live = torch.tensor([0, 2, 3])
        for x, y in zip(runs[g].model.state_dict().values(), runs[5].model.state_dict().values(), strict=True):
            assert torch.allclose(x[live], y[live], rtol=1e-8, atol=1e-10)
