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
        self._rates = [_per_net(lr, p) for p, lr in zip(self.params, self.lrs, strict=True)]  # broadcastable views
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
        if not self.any_adam:
            return self._sgd_step(grads, ok)
        n = ok.shape[0]
        a_ups, ms, vs = self._adam_updates(grads)  # before the in-place SGD scaling below reuses the gradients
        if self.all_adam:
            ups = a_ups
        else:
            ups = [g.mul_(_per_net(lr, g)) for g, lr in zip(grads, self.lrs, strict=True)]
            ups = [torch.where(_per_net(self.is_adam, u), a, u) for u, a in zip(ups, a_ups, strict=True)]
        ok = ok & self._finite(ups, n)
        self._apply(ups, [None] * len(ups), ok)
        for old, new in zip(self.m + self.v, ms + vs, strict=True):
            old.copy_(torch.where(_per_net(ok, old), new, old))
        self.t += 1
        return ok

    def _sgd_step(self, grads: list[torch.Tensor], ok: torch.Tensor) -> torch.Tensor:
        """p <- p - lr g in one fused pass per tensor (addcmul), the finiteness check on lr * sum(g) beforehand."""
        n = ok.shape[0]
        ok = ok & self._finite(grads, n, self.lrs)
        self._apply(grads, self.lrs, ok)
        self.t += 1
        return ok

    @staticmethod
    def _finite(tensors: list[torch.Tensor], n: int, scales: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Per network: is every tensor's (scaled) sum finite? A NaN or inf anywhere in a network's block makes
        its sum non-finite, so one reduction per tensor suffices."""
        total = torch.zeros(n, dtype=tensors[0].dtype, device=tensors[0].device)
        for i, u in enumerate(tensors):
            s = u.reshape(n, -1).sum(1)
            total += s * scales[i] if scales is not None else s
        return torch.isfinite(total)

    def _apply(self, ups: list[torch.Tensor], lrs: list, ok: torch.Tensor) -> None:
        """p <- p - lr u for the networks with ``ok`` (lr None: the update is already scaled)."""
        everyone = bool(ok.all())
        if everyone and lrs is self.lrs:  # the usual SGD step: one fused call over every tensor
            torch._foreach_addcmul_(self.params, ups, self._rates, value=-1)
            return
        for p, u, lr in zip(self.params, ups, lrs, strict=True):
            if not everyone:  # NaN * 0 is NaN: mask the update itself, not only its rate
                u = torch.where(_per_net(ok, u), u, torch.zeros((), dtype=u.dtype, device=u.device))
            if lr is None:
                p.sub_(u)
            else:
                p.addcmul_(u, _per_net(lr, u), value=-1)
