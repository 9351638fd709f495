"""BN's effective step inside networks: weight norms, effective steps and sphere sharpness for N networks at once.

A weight layer whose output goes straight into BN (``bn_preceded``) leaves the loss invariant to its scale:
L(c W) = L(W) for c > 0. Hence grad L(c W) = grad L(W) / c and Hess L(c W) = Hess L(W) / c^2, and an SGD step
of rate lr on W moves the direction W / ||W|| as a step of rate lr / ||W||^2 on the unit sphere. So per network
and per such layer [derived; the network analogue of the least-squares eps_hat = eps a^2 / ||w||_H^2, where the
scale a^2 sits inside the sphere Hessian here]:

- ``eff_step = lr / ||W||^2``, the step the direction takes;
- ``sharpness``: the top eigenvalue of P Hess_W L P at the unit-norm weights, i.e. ``||W||^2 lambda_top(W)``,
  with P = I - W W^T / ||W||^2 (the scale direction projected out: the loss does not change along it);
- ``edge = eff_step * sharpness / 2 = lr lambda_top(W) / 2``: gradient descent on that block is stable for
  edge < 1, and BN's self-tuning would hold it just under 1.

The Hessian is of the training loss of each network with respect to that layer's weights only, the loss being the
mean over fixed mini-batches of the batch loss with BN in training mode (batch statistics), as SGD sees it. The
networks' parameters are disjoint, so the Hessian of the sum of the N losses is block-diagonal: one Hessian-vector
product gives every network's block, and the eigen-solver runs for all N at once (per-network inner products and
normalisation). The solver is Lanczos with full reorthogonalisation [ours, instead of power iteration]: on M5 at
initialisation 30 power iterations stopped 12% below the top eigenvalue (eigenvalues close together), while 20
Lanczos steps agree with 300 float64 steps to 1e-5 (M5 on MNIST-1D, both layers, measured); and Lanczos returns
the largest *algebraic* eigenvalue, so negative curvature needs no shifted second pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from bnlab.nn.layers import BatchedBatchNorm
from bnlab.nn.trainer import network_losses


def bn_preceded(net: nn.Module) -> list[int]:
    """Indices in ``net.layers`` of the weight layers (Linear/Conv) whose output goes straight into a BN layer."""
    layers = list(net.layers)
    return [
        i
        for i, layer in enumerate(layers[:-1])
        if isinstance(layers[i + 1], BatchedBatchNorm) and getattr(layer, "weight", None) is not None
    ]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _per_net(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * (like.dim() - 1)))


def weight_norms(net: nn.Module, layers: Sequence[int]) -> torch.Tensor:
    """||W|| per BN-preceded layer and network, (L, N): the Frobenius norm of network k's block."""
    return torch.stack([net.layers[i].weight.detach().flatten(1).norm(dim=1) for i in layers])


def sphere_sharpness(
    net: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss: str,
    layers: Sequence[int],
    *,
    iters: int = 20,
    seed: int = 0,
) -> torch.Tensor:
    """Top eigenvalue of P Hess_W L P per layer and network at the current weights, (L, N), times ||W||^2: the
    sharpness on the unit sphere (see the module docstring). ``batches``: the (x, y) mini-batches whose mean batch
    loss is L; ``iters`` Lanczos steps (exact once it reaches the layer's size). The parameters and BN running
    statistics are left as they were."""
    buffers = [b.detach().clone() for b in net.buffers()]
    was_training, was_fast = net.training, getattr(net, "fast_cpu", False)
    net.train()
    net.fast_cpu = False  # the CPU kernels have no second derivative; H v needs one
    weights = [net.layers[i].weight for i in layers]
    try:
        total = sum(network_losses(net(x), y, loss).sum() for x, y in batches) / len(batches)
        grads = torch.autograd.grad(total, weights, create_graph=True)
        gen = torch.Generator().manual_seed(seed)
        out = []
        for w, g in zip(weights, grads, strict=True):
            top = _lanczos(w, g, iters, gen)
            out.append(top * w.detach().flatten(1).pow(2).sum(1))
        return torch.stack(out)
    finally:
        with torch.no_grad():
            for b, saved in zip(net.buffers(), buffers, strict=True):
                b.copy_(saved)
        net.train(was_training)
        net.fast_cpu = was_fast


def _lanczos(w: torch.Tensor, g: torch.Tensor, steps: int, gen: torch.Generator) -> torch.Tensor:
    """Largest eigenvalue of P H P on the tangent space, per network (N,): ``steps`` Lanczos steps with full
    reorthogonalisation, all networks at once; H v by a double backward through ``g = dL/dW`` (graph kept).

    T_k = Q_k^T (P H P) Q_k is tridiagonal (alpha on the diagonal, beta beside it); its top eigenvalue (a Ritz
    value) is the estimate. The Krylov space cannot exceed the tangent space, so ``steps`` is capped at its
    dimension, where the estimate is exact up to round-off."""
    n = w.shape[0]
    w_hat = w.detach() / _per_net(w.detach().flatten(1).norm(dim=1), w)
    steps = max(1, min(steps, w[0].numel() - 1))

    def project(v: torch.Tensor) -> torch.Tensor:
        return v - _per_net(_dot(v, w_hat), v) * w_hat

    v = _unit(project(torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)))
    basis, alphas, betas = [], [], []
    for k in range(steps):
        basis.append(v)
        (hv,) = torch.autograd.grad(g, w, grad_outputs=v, retain_graph=True)
        r = project(hv)
        alphas.append(_dot(v, r))
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough"), keeps Q orthonormal in float32
            for q in basis:
                r = r - _per_net(_dot(q, r), r) * q
        beta = r.flatten(1).norm(dim=1)
        if k < steps - 1:
            betas.append(beta)
            # Breakdown (an invariant subspace found): continue from zero, which only adds zero rows to T.
            v = torch.where(_per_net(beta > 0, r), r / _per_net(beta.clamp_min(torch.finfo(r.dtype).tiny), r), 0.0)
    T = torch.diag_embed(torch.stack(alphas, 1))
    if betas:
        off = torch.diag_embed(torch.stack(betas, 1), offset=1)
        T = T + off + off.transpose(1, 2)
    top = torch.full((n,), float("nan"), dtype=w.dtype, device=w.device)
    ok = torch.isfinite(T).flatten(1).all(1)  # a diverged network's NaNs stay its own
    if bool(ok.any()):
        top[ok] = torch.linalg.eigvalsh(T[ok])[:, -1]
    return top


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / _per_net(v.flatten(1).norm(dim=1), v)


class SharpnessTracker:
    """A ``train(on_log=...)`` hook recording, at every logged step t, per BN-preceded layer and network:
    ``w_norm``, ``eff_step = lr / ||W||^2`` and, when t % ``every`` == 0, ``sharpness`` (sphere) and
    ``edge = eff_step * sharpness / 2``. State is real here (the records), hence a class.

    ``lrs`` (N,): each network's weight learning rate; ``batches``: the fixed (x, y) batches of the loss.
    """

    def __init__(self, batches, loss: str, lrs, every: int, iters: int = 20, seed: int = 0):
        self.batches, self.loss, self.every = list(batches), loss, every
        self.iters, self.seed = iters, seed
        self.lrs = torch.as_tensor(lrs, dtype=torch.float64)
        self.records: list[dict] = []

    def __call__(self, t: int, net: nn.Module) -> None:
        layers = bn_preceded(net)
        norms = weight_norms(net, layers).to("cpu", torch.float64)
        eff = self.lrs / norms**2
        sharp = torch.full_like(eff, float("nan"))
        if t % self.every == 0:
            sharp = sphere_sharpness(net, self.batches, self.loss, layers, iters=self.iters, seed=self.seed + t)
            sharp = sharp.detach().to("cpu", torch.float64)
        for j, layer in enumerate(layers):
            self.records.append(
                {
                    "step": t,
                    "layer": layer,
                    "net": range(len(self.lrs)),
                    "w_norm": norms[j].numpy(),
                    "eff_step": eff[j].numpy(),
                    "sharpness": sharp[j].numpy(),
                    "edge": (eff[j] * sharp[j] / 2).numpy(),
                }
            )

    def frame(self) -> pd.DataFrame:
        """One row per (step, layer, net)."""
        return pd.concat([pd.DataFrame(r) for r in self.records], ignore_index=True)
