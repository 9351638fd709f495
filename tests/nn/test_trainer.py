"""Trainer behaviour: divergence isolation, tidy results, validation, and the BN learning-rate window."""

import numpy as np
import pytest
import torch

from bnlab.errors import BnlabError
from bnlab.experiments.windows import accuracy_window
from bnlab.nn import ModelSpec, NetConfig, load_dataset, train
from bnlab.nn.models import BatchedNet
from bnlab.nn.trainer import GROUP_BYTES, default_group_size


@pytest.fixture(scope="module")
def mnist1d():
    return load_dataset("mnist1d")


def test_absurd_rates_are_frozen_and_do_not_touch_the_others(mnist1d):
    spec = ModelSpec("M5", bn=False, hidden=32)
    sane = [NetConfig(lr=lr, seed=s) for lr, s in ((0.01, 0), (0.1, 1), (0.3, 2))]
    absurd = [NetConfig(lr=1e6, seed=3), NetConfig(lr=1e9, seed=4)]
    mixed = sane[:2] + absurd[:1] + sane[2:] + absurd[1:]
    kw = dict(steps=40, log_every=5, dtype=torch.float64, test_size=500)
    alone = train(spec, mnist1d, sane, **kw)
    both = train(spec, mnist1d, mixed, **kw)
    nets = both.networks
    print(nets[["lr", "diverged", "diverged_step"]])
    assert nets.diverged.tolist() == [False, False, True, False, True]
    assert (nets.diverged_step[nets.diverged] <= 2).all()
    # Frozen networks keep finite parameters.
    assert all(torch.isfinite(p).all() for p in both.model.parameters())
    # The others' numbers equal a sweep without the absurd rates (to float64 round-off: the shared first-layer GEMM
    # may block differently for another N).
    cols = ["train_loss", "train_acc", "test_loss", "test_acc"]
    h = both.history
    for k_mixed, k_alone in ((0, 0), (1, 1), (3, 2)):
        a = h[h.net == k_mixed][cols].to_numpy()
        b = alone.history[alone.history.net == k_alone][cols].to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # Diverged rows are marked and carry NaN metrics from the divergence step on.
    div_rows = h[(h.net == 2) & (h.step >= nets.diverged_step[2])]
    assert div_rows.diverged.all() and div_rows[cols].isna().all().all()


def test_history_is_tidy_and_chunks_are_reproducible(mnist1d):
    spec = ModelSpec("M2", bn=True)
    configs = [NetConfig(lr=0.1, seed=0), NetConfig(lr=1.0, seed=1)]
    res = train(spec, mnist1d, configs, steps=25, log_every=10)
    assert list(res.history.columns) == ["net", "step", "train_loss", "train_acc", "test_loss", "test_acc", "diverged"]
    assert sorted(res.history.step.unique()) == [0, 10, 20, 25]
    assert {"lr", "bn_lr", "seed", "diverged", "diverged_step", "final_test_acc"} <= set(res.networks.columns)
    # A chunk holding only the second config reproduces its numbers exactly (same batches, seed-only init).
    chunk = train(spec, mnist1d, configs[1:], steps=25, log_every=10)
    a = res.history[res.history.net == 1].drop(columns="net").to_numpy(dtype=float)
    b = chunk.history.drop(columns="net").to_numpy(dtype=float)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_user_errors_are_bnlab_errors(mnist1d):
    with pytest.raises(BnlabError, match="lr"):
        NetConfig(lr=-0.1)
    with pytest.raises(BnlabError, match="optimizer"):
        NetConfig(lr=0.1, optimizer="rmsprop")
    with pytest.raises(BnlabError, match="image"):
        train(ModelSpec("M1"), mnist1d, [NetConfig(lr=0.1)], steps=1)
    with pytest.raises(BnlabError, match="model kind"):
        ModelSpec("M9")
    with pytest.raises(BnlabError, match="batch size"):
        train(ModelSpec("M2"), mnist1d, [NetConfig(lr=0.1)], steps=1, batch_size=10**6)


def test_bn_widens_the_learning_rate_window_on_mnist1d(mnist1d):
    """M5 (h = 100) on MNIST-1D, 14 rates in logspace(-3, 3) x 2 seeds, 400 steps of batch 100: the rates whose
    mean final test accuracy (full test set) is within 0.05 absolute of the best span more decades with BN."""
    lrs = np.logspace(-3, 3, 14)
    widths, best = {}, {}
    for bn in (True, False):
        configs = [NetConfig(lr=float(lr), seed=s) for lr in lrs for s in range(2)]
        res = train(ModelSpec("M5", bn=bn, hidden=100), mnist1d, configs, steps=400, log_every=100, test_size=None)
        acc = res.networks.groupby("lr").final_test_acc.mean()  # NaN (diverged) counts as failed
        widths[bn] = accuracy_window(acc.index.to_numpy(), acc.to_numpy(), tol=0.05).width
        best[bn] = acc.max()
        print(
            f"BN={bn}: best acc {best[bn]:.3f}, window {widths[bn]:.2f} decades,",
            " ".join(f"{lr:.3g}:{a:.2f}" for lr, a in acc.items()),
        )
    assert widths[True] > widths[False] + 0.5
    assert best[True] > 0.5 and best[False] > 0.5


@pytest.mark.parametrize(
    ("kind", "hidden", "dtype", "device", "expected"),
    [
        ("M5", 100, torch.float32, "cpu", 40),  # 40 x 0.3 MiB first-layer weights: one group
        ("M5", 1000, torch.float32, "cpu", 5),  # 3.0 MiB per network: 16 MiB hold 5
        ("M5", 1000, torch.float64, "cpu", 2),
        ("M5", 1000, torch.float32, "cuda", 40),  # no grouping on a GPU
        ("M1", 100, torch.float32, "cpu", 1),  # CNNs one network at a time on a CPU
    ],
)
def test_default_group_size_keeps_dense_groups_under_the_byte_budget(kind, hidden, dtype, device, expected):
    net = BatchedNet(ModelSpec(kind, hidden=hidden), (1, 28, 28), 10, 40).to(dtype)  # parameters left unset
    size = default_group_size(net, torch.device(device))
    assert size == expected
    if device == "cpu" and kind == "M5":
        assert size * hidden * 784 * net.layers[1].weight.element_size() <= GROUP_BYTES
