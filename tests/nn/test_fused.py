"""The fused conv-block tail (bnlab.nn.fused) against torch's max_pool2d(relu(batch_norm(z))) and its autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.nn import Dataset, ModelSpec, NetConfig, train
from bnlab.nn.fused import bn_relu_pool, relu_pool
from bnlab.nn.models import init_batched
from bnlab.nn.sharpness import sphere_sharpness


@pytest.fixture
def tiny_images() -> Dataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(60, 1, 8, 8, generator=g, dtype=torch.float64)
    y = (x.flatten(1) @ torch.randn(64, 10, generator=g, dtype=torch.float64)).argmax(1)
    return Dataset("toy", x[:40], y[:40], x[40:], y[40:], 10)


def _both(z, gamma, beta, mean, var, training, grad):
    """(output, dz, dgamma, dbeta, running mean, running var) from torch's three ops and from the fused one."""
    out = []
    for fn in (
        lambda z, g, b, m, v: F.max_pool2d(torch.relu(F.batch_norm(z, m, v, g, b, training, 0.1, 1e-5)), 2),
        lambda z, g, b, m, v: bn_relu_pool(z, g, b, m, v, training, 0.1, 1e-5),
    ):
        zz, gg, bb = (t.detach().clone().requires_grad_() for t in (z, gamma, beta))
        m, v = mean.clone(), var.clone()
        y = fn(zz, gg, bb, m, v)
        out.append((y.detach(), *torch.autograd.grad(y, (zz, gg, bb), grad), m, v))
    return out


def _rel(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-300)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 5),
    c=st.integers(1, 4),
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    training=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_tail_equals_torch_float64(b, c, h, w, training, seed):
    """Any shape (odd H, W leave a row/column out of the pooling), gamma of either sign (a negative gamma turns
    the window's maximum into z's minimum), both modes: output, the three gradients and the running statistics
    agree with torch to float64 round-off."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64) * 3 + 1
    gamma = torch.randn(c, generator=gen, dtype=torch.float64)
    beta = torch.randn(c, generator=gen, dtype=torch.float64)
    mean, var = torch.randn(c, generator=gen, dtype=torch.float64), torch.rand(c, dtype=torch.float64) + 0.5
    grad = torch.randn(b, c, h // 2, w // 2, generator=gen, dtype=torch.float64)
    if training and b * h * w == 1:
        return
    ref, got = _both(z, gamma, beta, mean, var, training, grad)
    for r, g in zip(ref, got, strict=True):
        assert _rel(g, r) < 1e-12


@pytest.mark.parametrize("training", [True, False])
def test_fused_tail_float32_at_m1_size(training):
    """M1's first block (100 images, 32 channels, 28x28) in float32: within float32 round-off of torch."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(100, 32, 28, 28, generator=gen)
    gamma, beta = torch.rand(32, generator=gen) + 0.5, torch.randn(32, generator=gen)
    grad = torch.randn(100, 32, 14, 14, generator=gen)
    ref, got = _both(z, gamma, beta, torch.zeros(32), torch.ones(32), training, grad)
    for r, g in zip(ref, got, strict=True):
        assert _rel(g, r) < 2e-5


def test_ties_send_the_gradient_where_torch_does():
    """Integer-valued z makes most windows tie: the gradient goes to the first maximum in row-major order."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randint(-1, 3, (6, 3, 8, 8), generator=gen).double()
    grad = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    ones, zeros = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    ref, got = _both(z, ones, zeros, zeros, ones, False, grad)
    assert torch.equal(got[0], ref[0])
    assert torch.allclose(got[1], ref[1], rtol=1e-14, atol=0)  # same positions, same values


def test_nan_reaches_the_output_as_in_torch():
    """A NaN is its window's maximum (diverged networks must still be caught by the loss check): in evaluation
    mode only its window is NaN, in training mode the channel's statistics spread it to every window."""
    z = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    z[1, 0, 2, 3] = float("nan")
    for training in (False, True):
        ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
        ref = F.max_pool2d(torch.relu(F.batch_norm(z, zeros.clone(), ones.clone(), ones, zeros, training)), 2)
        got = bn_relu_pool(z, ones, zeros, zeros.clone(), ones.clone(), training)
        assert torch.equal(got.isnan(), ref.isnan())
        assert got.isnan().sum() == (8 if training else 1)
        assert torch.equal(got.nan_to_num(), ref.nan_to_num()) or training


def test_relu_pool_is_exact():
    """Without BN the tail is max_pool2d(relu(z)): identical output and gradient, bit for bit."""
    gen = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(4, 3, 7, 6, generator=gen, dtype=dtype, requires_grad=True)
        grad = torch.randn(4, 3, 3, 3, generator=gen, dtype=dtype)
        ref, got = F.max_pool2d(torch.relu(z), 2), relu_pool(z)
        assert torch.equal(got, ref)
        assert torch.equal(torch.autograd.grad(got, z, grad)[0], torch.autograd.grad(ref, z, grad)[0])


@pytest.mark.parametrize("kind", ["M1", "M3"])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("group", [1, 2])
def test_fused_and_unfused_training_agree(kind, bn, group, tiny_images):
    """Five SGD steps of two CNNs in float64, with the CPU kernels (fused tails, the dense head's conv-layout
    input gradient) and with torch's separate layers, one network per pass and both in one."""
    spec = ModelSpec(kind, bn=bn)
    configs = [NetConfig(lr=0.05, seed=3), NetConfig(lr=0.2, seed=4)]
    runs = []
    for fused in (True, False):
        model = init_batched(spec, tiny_images.input_shape, tiny_images.num_classes, [3, 4], dtype=torch.float64)
        model.fast_cpu = fused
        train(spec, tiny_images, configs, steps=5, batch_size=10, test_size=10, model=model, group_size=group)
        runs.append(torch.cat([p.detach().flatten() for p in model.state_dict().values()]))
    assert _rel(runs[0], runs[1]) < 1e-10
    if bn:  # both paths ran: BN's sums are taken in another order, so the last bits differ
        assert not torch.equal(runs[0], runs[1])


def test_sharpness_runs_unfused_on_a_cnn(tiny_images):
    """The sphere sharpness needs H v (a second derivative), which the fused tail lacks: it switches fusion off
    for its passes and back on after."""
    spec = ModelSpec("M3", bn=True)
    model = init_batched(spec, tiny_images.input_shape, tiny_images.num_classes, [0, 1], dtype=torch.float64)
    x, y = tiny_images.x_train[:10], tiny_images.y_train[:10]
    conv = next(i for i, op in enumerate(model.ops) if op[0] == "conv")
    top = sphere_sharpness(model, [(x.double(), y)], "cross_entropy", [conv], iters=3)
    assert top.shape == (1, 2) and bool(torch.isfinite(top).all()) and bool((top > 0).all())
    assert model.fast_cpu
