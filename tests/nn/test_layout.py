"""The feature-major dense layout: every dense activation and the gradient autograd sends back to it is contiguous
(N, F, B), the logits a (B, N, K) view of one, and the losses the same on that view as on a contiguous copy."""

import pytest
import torch
import torch.nn.functional as F

from bnlab.nn import ModelSpec, network_losses
from bnlab.nn.models import init_batched
from bnlab.nn.trainer import network_accuracy

N, B = 3, 7


@pytest.mark.parametrize(("kind", "bn", "shape"), [("M5", True, (20,)), ("M5", False, (20,)), ("M3", True, (1, 8, 8))])
def test_dense_activations_and_their_gradients_are_contiguous(kind, bn, shape):
    net = init_batched(ModelSpec(kind, bn=bn, hidden=6), shape, 4, list(range(N)), dtype=torch.float64)
    net.fast_cpu = False  # every layer by itself, so each output seen below is one layer's
    dense, grads = [], []

    def watch(layer, inputs, out):
        if out.dim() == 3:  # dense (N, F, B)
            dense.append(out)
            out.register_hook(lambda g: grads.append(g.is_contiguous()))

    for layer in net.layers:
        layer.register_forward_hook(watch)
    logits = net(torch.randn(B, *shape, dtype=torch.float64))
    assert logits.shape == (B, N, 4) and logits.permute(1, 2, 0).is_contiguous()  # a view, not a copy
    assert dense and all(d.shape[0] == N and d.shape[2] == B for d in dense)
    flatten = [d.grad_fn.name() == "PermuteBackward0" for d in dense]  # conv -> dense: the one strided view
    assert sum(flatten) == (kind != "M5")
    assert all(d.is_contiguous() for d, f in zip(dense, flatten, strict=True) if not f)
    network_losses(logits, torch.arange(B) % 4, "cross_entropy").sum().backward()
    assert len(grads) == len(dense) and all(grads)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared", "half_squared"])
def test_losses_on_a_permuted_view_equal_those_on_a_contiguous_copy_and_torch(loss):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(N, 5, B, dtype=torch.float64, generator=g).permute(2, 0, 1)  # (B, N, K) view, as a net returns
    y = torch.randint(0, 5, (B,), generator=g) if loss != "half_squared" else torch.randn(B, dtype=torch.float64)
    if loss == "half_squared":
        z = z[..., :1]
    got, copied = network_losses(z, y, loss), network_losses(z.contiguous(), y, loss)
    assert torch.allclose(got, copied, rtol=1e-14, atol=0)
    for k in range(N):
        if loss == "cross_entropy":
            ref = F.cross_entropy(z[:, k], y)
        elif loss == "squared":
            ref = (torch.softmax(z[:, k], 1) - F.one_hot(y, 5)).pow(2).sum(1).mean()
        else:
            ref = 0.5 * (z[:, k, 0] - y).pow(2).mean()
        assert torch.allclose(got[k], ref, rtol=1e-13, atol=0)
    if loss != "half_squared":
        assert torch.equal(network_accuracy(z, y), (z.argmax(-1) == y[:, None]).double().mean(0))
