"""Vectorised SGD and Adam with one set of hyperparameters per network, and per-network freezing.

Every parameter tensor has the model axis first, so a per-network hyperparameter h (N,) is broadcast as
h.view(N, 1, ..., 1). Updates (torch.optim conventions, no weight decay):
  SGD:  p <- p - lr g
  Adam: m <- m + (1 - b1)(g - m); v <- b2 v + (1 - b2) g^2;
        p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
BN parameters (gamma, beta) use their own rate ``bn_lr`` (the analogue of the OLS eps_a).
A network whose update is not finite, or that is flagged by the caller, is left untouched: that is how a diverged
network is frozen with finite values while the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _per_net(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return h.view(-1, *([1] * (like.dim() - 1)))


class BatchedOptimizer:
    """Holds the per-network hyperparameters and Adam moments of a batched net (real state, hence a class)."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lrs: Sequence[torch.Tensor],
        is_adam: torch.Tensor,
        beta1: torch.Tensor,
        beta2: torch.Tensor,
        eps: torch.Tensor,
    ):
        self.params, self.lrs = list(params), list(lrs)
        self.is_adam, self.beta1, self.beta2, self.eps = is_adam, beta1, beta2, eps
        self.any_adam = bool(is_adam.any())
        self.all_adam = bool(is_adam.all())
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params] if self.any_adam else []
        self.v = [torch.zeros_like(p) for p in self.params] if self.any_adam else []

    def _adam_updates(self, grads: list[torch.Tensor]) -> tuple[list, list, list]:
        t = self.t + 1
        bc1 = 1 - self.beta1**t
        bc2_sqrt = (1 - self.beta2**t).sqrt()
        ups, ms, vs = [], [], []
        for p, g, m, v, lr in zip(self.params, grads, self.m, self.v, self.lrs, strict=True):
            b1, b2 = _per_net(self.beta1, p), _per_net(self.beta2, p)
            m_new = m + (g - m) * (1 - b1)
            v_new = v * b2 + (1 - b2) * g * g
            denom = v_new.sqrt() / _per_net(bc2_sqrt, p) + _per_net(self.eps, p)
            ups.append(_per_net(lr / bc1, p) * m_new / denom)
            ms.append(m_new)
            vs.append(v_new)
        return ups, ms, vs

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], ok: torch.Tensor) -> torch.Tensor:
        """Apply the update to the networks with ``ok`` and a finite update; return that final mask (N,)."""
        n = ok.shape[0]
        ms: list[torch.Tensor] = []
        vs: list[torch.Tensor] = []
        if self.any_adam:  # before the in-place SGD scaling below reuses the gradient tensors
            a_ups, ms, vs = self._adam_updates(grads)
        if self.all_adam:
            ups = a_ups
        else:
            # SGD update computed in place on the fresh gradient tensors: u = lr g.
            ups = [g.mul_(_per_net(lr, g)) for g, lr in zip(grads, self.lrs, strict=True)]
            if self.any_adam:
                ups = [torch.where(_per_net(self.is_adam, u), a, u) for u, a in zip(ups, a_ups, strict=True)]
        # A non-finite update anywhere in a network (NaN, inf, overflow) freezes that network.
        total = torch.zeros(n, dtype=ups[0].dtype, device=ups[0].device)
        for u in ups:
            total += u.reshape(n, -1).sum(1)
        ok = ok & torch.isfinite(total)
        if bool(ok.all()):
            for p, u in zip(self.params, ups, strict=True):
                p.sub_(u)
        else:
            for p, u in zip(self.params, ups, strict=True):
                p.sub_(torch.where(_per_net(ok, u), u, torch.zeros((), dtype=u.dtype, device=u.device)))
        if self.any_adam:
            for old, new in zip(self.m + self.v, ms + vs, strict=True):
                old.copy_(torch.where(_per_net(ok, old), new, old))
        self.t += 1
        return ok
