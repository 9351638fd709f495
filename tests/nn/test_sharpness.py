"""Batched sphere sharpness equals the top eigenvalue of a dense, projected Hessian computed network by network."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from bnlab.nn import BatchedNet
from bnlab.nn.sharpness import bn_preceded, sphere_sharpness, weight_norms


def tiny() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3), nn.BatchNorm1d(3))


def _dense_sphere_top(ref: nn.Module, name: str, batches) -> float:
    """||W||^2 * top eigenvalue of P H P from the full Hessian of one torch.nn network's mean batch loss."""
    w0 = dict(ref.named_parameters())[name].detach()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {name: flat.view(w0.shape)}
        return sum(nn.functional.cross_entropy(functional_call(ref, params, (x,)), y) for x, y in batches) / len(
            batches
        )

    H = torch.autograd.functional.hessian(loss, w0.flatten())
    u = w0.flatten() / w0.norm()
    P = torch.eye(len(u), dtype=u.dtype) - torch.outer(u, u)
    return float(torch.linalg.eigvalsh(P @ H @ P).max() * w0.norm() ** 2)


@pytest.mark.parametrize("layer", [0, 3])
def test_batched_sphere_sharpness_equals_dense_hessian(layer):
    seeds = [1, 2, 3, 4]
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
        for _ in range(2)
    ]
    net = BatchedNet.from_module(tiny(), len(seeds), seeds, dtype=torch.float64)
    scales = [1.0, 3.0, 0.2, 1.0]  # ||W|| differs between networks (BN's eps makes L only nearly scale-invariant)
    with torch.no_grad():
        net.layers[layer].weight.mul_(torch.tensor(scales, dtype=torch.float64).view(-1, 1, 1))
    assert bn_preceded(net) == [0, 3]
    buffers = [b.clone() for b in net.buffers()]
    got = sphere_sharpness(net, batches, "cross_entropy", [layer], iters=50)[0]
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers(), strict=True))  # BN statistics restored
    want = []
    for s, c in zip(seeds, scales, strict=True):
        torch.manual_seed(s)
        ref = tiny().double().train()
        with torch.no_grad():
            ref[layer].weight.mul_(c)
        want.append(_dense_sphere_top(ref, f"{layer}.weight", batches))
    want = torch.tensor(want, dtype=torch.float64)
    rel = ((got - want).abs() / want.abs()).max().item()
    print(f"layer {layer}: batched {got.tolist()} dense {want.tolist()} max rel error {rel:.1e}")
    assert rel < 1e-6
    assert want.min() > 0
    norms = weight_norms(net, [layer])[0]
    want_norms = [float(w.norm()) for w in _ref_weights(seeds, scales, layer)]
    assert torch.allclose(norms, torch.tensor(want_norms, dtype=torch.float64))


def _ref_weights(seeds, scales, layer):
    for s, c in zip(seeds, scales, strict=True):
        torch.manual_seed(s)
        yield tiny().double()[layer].weight.detach() * c


def test_negative_curvature_does_not_hide_the_top_eigenvalue():
    """A quadratic form per network, Hessians diag(-5, 1, 2, 0) and diag(-1, 3, 0.5, 0), at W = e_4 (the direction
    projected out): the largest-magnitude eigenvalue of the first is -5; the top one, 2, must be returned."""
    from bnlab.nn.sharpness import _lanczos

    d = torch.tensor([[-5.0, 1.0, 2.0, 0.0], [-1.0, 3.0, 0.5, 0.0]], dtype=torch.float64)
    w = torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (d * (w + 1.0) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, w, create_graph=True)
    top = _lanczos(w, grad, 20, torch.Generator().manual_seed(0))
    assert torch.allclose(top, torch.tensor([2.0, 3.0], dtype=torch.float64), rtol=1e-10)


def test_lanczos_converges_on_a_layer_larger_than_its_steps():
    """A 200-parameter layer, 20 Lanczos steps: the top eigenvalue of a clustered spectrum to 1e-6."""
    from bnlab.nn.sharpness import _lanczos

    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(201, 201, generator=gen, dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 9.5, 9.0]), torch.rand(198, generator=gen, dtype=torch.float64) * 8])
    lam[-1] = 0.0
    q = torch.cat([q[:, :-1], q[:, -1:]], 1)
    A = (q * lam) @ q.T
    w = q[:, -1].clone().view(1, 201).requires_grad_(True)  # along the eigenvalue-0 direction: projected out
    loss = 0.5 * (w @ A @ w.T).sum()
    (grad,) = torch.autograd.grad(loss, w, create_graph=True)
    top = _lanczos(w, grad, 40, torch.Generator().manual_seed(0))
    assert abs(top.item() - 10.0) < 1e-6
