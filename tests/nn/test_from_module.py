"""``BatchedNet.from_module``: N copies of any supported Sequential equal N torch.nn copies trained one at a time."""

import pytest
import torch
from torch import nn

from bnlab.errors import BnlabError
from bnlab.nn import BatchedNet, Dataset, NetConfig, batch_schedule, train, without_bn

STEPS, BATCH = 30, 16


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(20, 16, bias=False),
        nn.BatchNorm1d(16),
        nn.Tanh(),
        nn.Dropout(0.0),
        nn.Linear(16, 12),
        nn.BatchNorm1d(12, eps=1e-3, momentum=0.2),
        nn.ReLU(),
        nn.Linear(12, 10),
        nn.BatchNorm1d(10),
    )


def cnn() -> nn.Sequential:
    # conv 1: the built-in batched conv (stride 1, 'same'); convs 2-3: the general one (groups, stride, no bias).
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6, 10),
        nn.BatchNorm1d(10),
    )


def cnn_bare_head() -> nn.Sequential:
    # a dense head without bias straight after a conv block (the CPU path's conv-layout input gradient)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10, bias=False),
        nn.BatchNorm1d(10),
    )


def bn_first() -> nn.Sequential:
    # BN and dropout on the shared input: per-network copies (N, F, B) made by an inserted replicate layer
    return nn.Sequential(nn.BatchNorm1d(20), nn.Dropout(0.0), nn.Linear(20, 10), nn.Tanh())


def sequence() -> nn.Sequential:
    # examples of shape (C, L): BatchNorm1d normalises each channel over the batch and L, then a flatten
    return nn.Sequential(nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(20, 10))


def _data(shape, n_train=96, n_test=40, classes=10) -> Dataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n_train + n_test, *shape, generator=g)
    y = (x.flatten(1) @ torch.randn(x[0].numel(), classes, generator=g)).argmax(1)
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def _torch_losses(build, seeds, lrs, data: Dataset) -> torch.Tensor:
    """Each network built under its seed and trained alone with torch.optim.SGD on the trainer's batches."""
    d = data.to("cpu", torch.float64)
    sched = batch_schedule(len(d.x_train), BATCH, STEPS + 1, 7)
    out = torch.zeros(STEPS, len(seeds), dtype=torch.float64)
    for k, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
        torch.manual_seed(seed)
        ref = build().double().train()
        opt = torch.optim.SGD(ref.parameters(), lr=lr)
        for t in range(STEPS):
            loss = nn.functional.cross_entropy(ref(d.x_train[sched[t]]), d.y_train[sched[t]])
            out[t, k] = loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return out


@pytest.mark.parametrize(
    ("build", "shape"),
    [(mlp, (20,)), (cnn, (1, 8, 8)), (cnn_bare_head, (1, 8, 8)), (bn_first, (20,)), (sequence, (4, 5))],
    ids=["mlp", "cnn", "cnn-bare-head", "bn-first", "sequence"],
)
@pytest.mark.parametrize("twin", [False, True], ids=["bn", "no-bn"])
def test_from_module_trains_like_torch_nn_copies(build, shape, twin):
    seeds, lrs = [3, 4, 3], [0.1, 0.2, 0.4]
    factory = (lambda: without_bn(build())) if twin else build
    data = _data(shape)
    net = BatchedNet.from_module(factory, len(seeds), seeds, input_shape=shape, dtype=torch.float64)
    assert net.num_classes == 10
    res = train(
        net.spec,
        data,
        [NetConfig(lr=lr) for lr in lrs],
        steps=STEPS,
        batch_size=BATCH,
        log_every=1,
        data_seed=7,
        model=net,
    )
    batched = torch.tensor(res.history.pivot(index="step", columns="net", values="train_loss").to_numpy())[:STEPS]
    ref = _torch_losses(factory, seeds, lrs, data)
    err = ((batched - ref).abs() / ref.abs()).max().item()
    print(f"{build.__name__} twin={twin}: max relative loss error over {STEPS} steps {err:.2e}")
    assert err < 1e-9
    # Networks 0 and 2 share their seed, not their rate: training moved them apart (no flat curves compared).
    assert ref[0, 0] == ref[0, 2] and (ref[:, 0] - ref[:, 2]).abs().max() > 1e-2


def test_module_init_equals_building_under_each_seed():
    """From an instance, copy k re-runs reset_parameters under seeds[k]: the same as building under that seed."""
    seeds = [11, 12]
    net = BatchedNet.from_module(cnn(), 2, seeds)
    for k, s in enumerate(seeds):
        torch.manual_seed(s)
        ref = cnn()
        assert torch.equal(net.layers[0].weight[k], ref[0].weight)
        assert torch.equal(net.layers[3].weight[k], ref[3].weight)
        assert torch.equal(net.layers[-2].bias[k], ref[-2].bias)
    assert not torch.equal(net.layers[0].weight[0], net.layers[0].weight[1])
    module = cnn()
    state = torch.random.get_rng_state()
    BatchedNet.from_module(module, 2, seeds)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    same = BatchedNet.from_module(cnn(), 3)  # no seeds: every copy is the module as given
    assert torch.equal(same.layers[0].weight[0], same.layers[0].weight[2])


def test_without_bn_removes_bn_and_restores_biases():
    m = mlp()
    twin = without_bn(m)
    assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in twin)
    assert len(twin) == len(m) - 3
    assert torch.equal(twin[0].weight, m[0].weight) and m[0].bias is None
    assert torch.equal(twin[0].bias, torch.zeros(16))  # restored where BN had made it redundant
    assert torch.equal(twin[3].bias, m[4].bias)


def test_dropout_draws_a_mask_per_network():
    net = BatchedNet.from_module(nn.Sequential(nn.Dropout(0.5), nn.Linear(50, 1, bias=False)), 4).double()
    with torch.no_grad():
        net.layers[-1].weight.fill_(1.0)
    out = net(torch.ones(3, 50, dtype=torch.float64))[..., 0]  # (B, N): twice the number of kept inputs
    assert len(set(out[0].tolist())) > 1
    assert torch.all(out.remainder(2.0) == 0)
    net.eval()
    assert torch.all(net(torch.ones(3, 50, dtype=torch.float64)) == 50)


def test_dropout2d_on_features_drops_elements_as_torch_does_not_whole_networks():
    net = BatchedNet.from_module(nn.Sequential(nn.Linear(8, 400), nn.Dropout2d(0.5)), 3).double()
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[0].bias.fill_(1.0)
    with pytest.warns(UserWarning, match="2-D input"):  # torch's own rule for (B, F): elementwise, deprecated
        assert (nn.Dropout2d(0.5)(torch.ones(5, 400)) == 0).float().mean().item() == pytest.approx(0.5, abs=0.1)
    kept = (net(torch.ones(5, 8, dtype=torch.float64)) != 0).double().mean(-1)  # (B, N): share of features kept
    assert torch.all((kept > 0.4) & (kept < 0.6))


@pytest.mark.parametrize(
    ("module", "named"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "LayerNorm"),
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, affine=False)), "affine"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")), "reflect"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2)), "Flatten first"),
        (nn.Linear(4, 4), "Sequential"),
    ],
)
def test_unsupported_layer_is_named_in_one_line(module, named):
    with pytest.raises(BnlabError, match=named) as info:
        BatchedNet.from_module(module, 2)
    assert "\n" not in str(info.value)


def test_input_shape_mismatch_is_one_line():
    with pytest.raises(BnlabError, match="does not accept inputs of shape") as info:
        BatchedNet.from_module(mlp(), 2, input_shape=(7,))
    assert "\n" not in str(info.value)


def test_a_module_net_rebuilds_from_its_spec():
    """``type(net)(net.spec, shape, classes, k)`` builds k networks of the same architecture (how a subset of the
    networks is taken); loaded with networks 2 and 0, it computes what they compute in the full net."""
    net = BatchedNet.from_module(cnn(), 3, [1, 2, 3], input_shape=(1, 8, 8))
    sub = type(net)(net.spec, net.input_shape, net.num_classes, 2)
    index = torch.tensor([2, 0])
    with torch.no_grad():
        for full, part in zip(net.state_dict().values(), sub.state_dict().values(), strict=True):
            part.copy_(full.index_select(0, index))
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(sub.eval()(x), net.eval()(x)[:, index], atol=1e-6)
