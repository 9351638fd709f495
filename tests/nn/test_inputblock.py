"""The fused first block (bnlab.nn.inputblock) against torch's max_pool2d(relu(batch_norm(conv2d(x)))) and its
autograd, and its use by the batched models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.nn import ModelSpec, inputblock
from bnlab.nn.inputblock import conv_bn_relu_pool, input_block_pays
from bnlab.nn.models import init_batched


def _reference(x, w, b, gamma, beta, mean, var, training):
    z = F.conv2d(x, w, b, padding=w.shape[-1] // 2)
    if gamma is not None:
        z = F.batch_norm(z, mean, var, gamma, beta, training, 0.1, 1e-5)
    return F.max_pool2d(torch.relu(z), 2)


def _fused(x, w, b, gamma, beta, mean, var, training):
    return conv_bn_relu_pool(x, w, b, gamma, beta, mean, var, training, 0.1, 1e-5)


def _both(x, w, b, gamma, beta, mean, var, training, grad):
    """(output, dw, db[, dgamma, dbeta, running mean, running var]) from torch's ops and from the fused block."""
    out = []
    for fn in (_reference, _fused):
        params = [t.detach().clone().requires_grad_() for t in (w, b, gamma, beta) if t is not None]
        bn = params[2:] or [None, None]
        m, v = (mean.clone(), var.clone()) if gamma is not None else (None, None)
        y = fn(x, params[0], params[1], *bn, m, v, training)
        grads = torch.autograd.grad(y, params, grad)
        out.append((y.detach(), *grads, *((m, v) if gamma is not None else ())))
    return out


def _close(got, ref, tol, scale=0.0):
    """Every array within tol of torch's, relative to its largest entry; the parameter gradients also within tol
    of ``scale``, the size of the terms they sum (torch's conv-bias gradient under BN in training mode, and the
    weight gradient of a 1-tap conv under BN, are round-off around an exact 0)."""
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        floor = scale if i in (1, 2) else 1e-300
        assert (g - r).abs().max().item() <= tol * max(r.abs().max().item(), floor), i


def _gradient_scale(x, w, b, gamma, mean, var, training, grad):
    """sum |g| max |p| |gamma| / std(z): the size of the terms of the weight gradient (|dz| <= ~3 |gamma| rstd |g|)."""
    z = F.conv2d(x, w, b, padding=w.shape[-1] // 2)
    if gamma is None:
        return grad.abs().sum().item() * x.abs().max().item()
    std = z.transpose(0, 1).flatten(1).std(1, correction=0) if training else var.sqrt()
    return grad.abs().sum().item() * x.abs().max().item() * (gamma.abs() / (std + 1e-3)).max().item()


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 4),
    c_in=st.integers(1, 3),
    k=st.sampled_from([1, 3, 5]),
    c=st.integers(1, 4),
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    training=st.booleans(),
    bn=st.booleans(),
    offset=st.sampled_from([0.0, 5.0, -300.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_input_block_equals_torch_float64(b, c_in, k, c, h, w, training, bn, offset, seed):
    """Any shape (odd H, W leave a row/column out of the pooling, k = 1 has no padding), inputs far from zero
    mean (the patch moments are taken about the batch mean), gamma of either sign, with and without BN, both
    modes: output, parameter gradients and running statistics agree with torch to float64 round-off."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c_in, h, w, generator=gen, dtype=torch.float64) * 2 + offset
    weight = torch.randn(c, c_in, k, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(c, generator=gen, dtype=torch.float64)
    gamma = torch.randn(c, generator=gen, dtype=torch.float64) if bn else None
    beta = torch.randn(c, generator=gen, dtype=torch.float64) if bn else None
    mean = torch.randn(c, generator=gen, dtype=torch.float64) * 3 + offset
    var = torch.rand(c, generator=gen, dtype=torch.float64) * 9 + 0.5
    grad = torch.randn(b, c, h // 2, w // 2, generator=gen, dtype=torch.float64)
    if bn and training and b * h * w == 1:
        return
    ref, got = _both(x, weight, bias, gamma, beta, mean, var, training, grad)
    _close(got, ref, 1e-11, _gradient_scale(x, weight, bias, gamma, mean, var, training, grad))


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("training", [True, False])
def test_input_block_float32_at_mnist_size(k, training):
    """M3's (k = 3) and M1's (k = 5) first block on 100 MNIST-sized images in float32: within float32 round-off of
    torch's float32 ops. beta = 2 keeps windows off the ReLU's edge: there a round-off difference in y sends a
    window's gradient elsewhere (or nowhere), which is no test of accuracy (with beta ~ N(0, 1), 1 of 627k
    windows did, against float64)."""
    gen = torch.Generator().manual_seed(k)
    x = torch.rand(100, 1, 28, 28, generator=gen) * 3 - 0.4
    w, b = torch.randn(16, 1, k, k, generator=gen) / k, torch.randn(16, generator=gen) * 0.1
    gamma, beta = torch.rand(16, generator=gen) + 0.5, torch.full((16,), 2.0)
    grad = torch.randn(100, 16, 14, 14, generator=gen)
    ref, got = _both(x, w, b, gamma, beta, torch.zeros(16), torch.ones(16), training, grad)
    _close(got, ref, 3e-5, 1e-3 * _gradient_scale(x, w, b, gamma, torch.zeros(16), torch.ones(16), training, grad))


@pytest.mark.parametrize("training", [True, False])
def test_ties_send_the_gradient_where_torch_does(training):
    """Integer inputs and filters make many windows tie exactly: the gradient goes to the first maximum in
    row-major order, as in torch, so the weight gradient agrees to round-off."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-1, 2, (6, 1, 8, 8), generator=gen).double()
    w = torch.randint(-1, 2, (3, 1, 3, 3), generator=gen).double()
    b = torch.zeros(3, dtype=torch.float64)
    ones, zeros = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    grad = torch.randn(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    top = F.conv2d(x, w, padding=1).unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2).sort(-1).values
    assert (top[..., 3] == top[..., 2]).float().mean() > 0.2  # the case under test: tied maxima (23% here)
    ref, got = _both(x, w, b, ones, zeros, zeros, ones, training, grad)
    assert torch.allclose(got[0], ref[0], rtol=1e-14, atol=1e-14)
    _close(got, ref, 1e-12, _gradient_scale(x, w, b, ones, zeros, ones, training, grad))


def test_zero_gamma_keeps_torchs_first_window_position():
    """gamma = 0 makes every y in a window equal: torch's first position wins, so beta's gradient is the sum of g
    where beta > 0 and the weight gradient is 0."""
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    w, b = torch.randn(2, 1, 3, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    gamma, beta = torch.zeros(2, dtype=torch.float64), torch.tensor([0.5, -0.5], dtype=torch.float64)
    grad = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    ref, got = _both(x, w, b, gamma, beta, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                     True, grad)  # fmt: skip
    _close(got, ref, 1e-12, _gradient_scale(x, w, b, gamma, None, None, True, grad))
    assert got[1].abs().max() == 0 and got[4][1] == 0
    assert torch.isclose(got[4][0], grad[:, 0].sum(), rtol=1e-14, atol=0)


def test_nan_in_the_input_reaches_the_output_as_in_torch():
    """A NaN pixel spoils the windows whose conv reads it (evaluation mode) or, through BN's statistics, every
    window (training mode), as in torch: diverged inputs must still be caught downstream."""
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    x[1, 0, 3, 4] = float("nan")
    w, b = torch.randn(2, 1, 3, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for training in (False, True):
        ref = _reference(x, w, b, ones, zeros, zeros.clone(), ones.clone(), training)
        got = _fused(x, w, b, ones, zeros, zeros.clone(), ones.clone(), training)
        assert torch.equal(got.isnan(), ref.isnan())
        assert 0 < got.isnan().sum() < got.numel() or training
        assert torch.allclose(got.nan_to_num(), ref.nan_to_num(), rtol=1e-12, atol=1e-12) or training


def test_a_batch_changed_in_place_is_read_again():
    """The block keeps what it derived from the last batch (shift, layout, patch moments) for the next group of
    networks; an in-place change of that batch (torch bumps its version) must not reuse it."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 1, 6, 6, generator=gen, dtype=torch.float64)
    w, b = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    first = _fused(x, w, b, ones, zeros, zeros.clone(), ones.clone(), True)
    assert torch.equal(_fused(x, w, b, ones, zeros, zeros.clone(), ones.clone(), True), first)  # reused
    x.mul_(3).add_(1)
    ref = _reference(x, w, b, ones, zeros, zeros.clone(), ones.clone(), True)
    got = _fused(x, w, b, ones, zeros, zeros.clone(), ones.clone(), True)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_models_use_the_block_where_it_pays(monkeypatch):
    """M1 and M3 on 1-channel images run their first block fused (D = 25 and 9 taps); the CIFAR-shaped M1 (3 x 5 x 5
    = 75 taps) and an input that needs a gradient do not."""
    calls = []
    real = inputblock._InputBlock.apply
    monkeypatch.setattr(inputblock._InputBlock, "apply", lambda *a: calls.append(1) or real(*a))
    for kind, shape, used in (("M1", (1, 12, 12), 1), ("M3", (1, 12, 12), 1), ("M1", (3, 12, 12), 0)):
        calls.clear()
        net = init_batched(ModelSpec(kind), shape, 10, [0, 1])
        net(torch.randn(4, *shape)).sum().backward()
        assert len(calls) == used, kind
    assert not input_block_pays(torch.randn(4, 1, 12, 12, requires_grad=True), 1, 5)
    assert not input_block_pays(torch.randn(4, 1, 12, 12), 1, 4)  # even k: no 'same' padding
