"""A conv block's tail in one pass on the CPU: 2x2 max pooling of ReLU(BN(z)), forward and backward (numba).

In training mode BN normalises channel c of z (B, C, H, W) with its batch statistics over (B, H, W):
``y = gamma_c (z - mu_c) / sqrt(var_c + eps) + beta_c`` (biased var_c), and the block returns
``p = maxpool2x2(relu(y)) = relu(maxpool2x2(y))`` (max and ReLU commute). In evaluation mode mu and var are the
running statistics. Why fuse: on a 2-core CPU torch's NCHW max pooling runs at ~1 GB/s and BN, ReLU and pooling
each walk the activation (and its gradient) separately: measured 25 of the 49 ms of one plain M1 step. A channel
of an M1 block is 0.1-0.3 MB, so per channel the passes below stay in the core's L2 cache.

Backward, with the pooled gradient g reaching only each window's (first) maximum and only where p > 0 (ReLU),
``dy`` is g at those positions and 0 elsewhere, and BN's training-mode gradient is

    ``dz = gamma_c rstd_c (dy - mean(dy) - xhat mean(dy xhat))``,  ``xhat = (z - mu_c) rstd_c``,
    ``dgamma_c = sum(dy xhat)``,  ``dbeta_c = sum(dy)``,

(means and sums over the channel's B H W elements; in evaluation mode ``dz = gamma_c rstd_c dy``). Only the
pooled positions carry dy, so the two sums cost a quarter of a pass. NaN propagates as in torch (a NaN in a
window is its maximum), so diverged networks are still caught downstream. Rows or columns left over by an odd
H or W count in the statistics and get only the mean terms of the gradient, as torch's floor pooling does.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

# Sums may be reassociated (vectorised): they are float64 sums of at most B H W terms, so the order moves them by
# far less than the float32 round-off of z; no flag that assumes finite values (NaN must reach the loss check).
FASTMATH = {"reassoc", "contract", "nsz"}


@numba.njit(inline="always", fastmath=FASTMATH)
def window_relu_max(y0, y1, y2, y3):  # pragma: no cover - compiled
    """(relu(max), offset 0..3) of a 2x2 window read row by row, by torch's rule: the first maximum wins, a NaN
    wins (y != y) and stays NaN through the ReLU. Written as selects, not branches, so that LLVM vectorises the
    loop over windows (3x faster, measured)."""
    t = (y1 > y0) | (y1 != y1)
    best = y1 if t else y0
    k = np.uint8(1) if t else np.uint8(0)
    t = (y2 > best) | (y2 != y2)
    best = y2 if t else best
    k = np.uint8(2) if t else k
    t = (y3 > best) | (y3 != y3)
    best = y3 if t else best
    k = np.uint8(3) if t else k
    return (best if (best > 0.0) | (best != best) else 0.0), k


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True)
def _forward(z, gamma, beta, mean, var, eps, training, out, arg):  # pragma: no cover - compiled
    """Fill ``out`` (B, C, H//2, W//2) and the window offsets ``arg`` (0..3, row-major); in training mode also
    write each channel's batch mean and biased variance into ``mean`` and ``var`` (two passes, float64 sums)."""
    nb, nc, nh, nw = z.shape
    ho, wo = nh // 2, nw // 2
    count = nb * nh * nw
    flat = z.reshape(nb, nc, nh * nw)
    for c in numba.prange(nc):
        if training:
            s = 0.0
            for b in range(nb):
                for e in range(nh * nw):
                    s += flat[b, c, e]
            m = s / count
            q = 0.0
            for b in range(nb):
                for e in range(nh * nw):
                    t = flat[b, c, e] - m
                    q += t * t
            mean[c] = m
            var[c] = q / count
        m = mean[c]
        scale = gamma[c] / math.sqrt(var[c] + eps)
        shift = beta[c]
        for b in range(nb):
            for i in range(ho):
                for j in range(wo):
                    y0 = (z[b, c, 2 * i, 2 * j] - m) * scale + shift
                    y1 = (z[b, c, 2 * i, 2 * j + 1] - m) * scale + shift
                    y2 = (z[b, c, 2 * i + 1, 2 * j] - m) * scale + shift
                    y3 = (z[b, c, 2 * i + 1, 2 * j + 1] - m) * scale + shift
                    out[b, c, i, j], arg[b, c, i, j] = window_relu_max(y0, y1, y2, y3)


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True)
def _backward(z, gamma, mean, var, eps, training, out, arg, grad, dz, dgamma, dbeta):  # pragma: no cover
    nb, nc, nh, nw = z.shape
    ho, wo = nh // 2, nw // 2
    count = nb * nh * nw
    flat = z.reshape(nb, nc, nh * nw)
    dflat = dz.reshape(nb, nc, nh * nw)
    for c in numba.prange(nc):
        m = mean[c]
        rstd = 1.0 / math.sqrt(var[c] + eps)
        s_dy = 0.0
        s_dyx = 0.0
        for b in range(nb):
            for i in range(ho):
                for j in range(wo):
                    if out[b, c, i, j] > 0.0:
                        k = arg[b, c, i, j]
                        g = grad[b, c, i, j]
                        s_dy += g
                        s_dyx += g * ((z[b, c, 2 * i + k // 2, 2 * j + k % 2] - m) * rstd)
        dgamma[c] = s_dyx
        dbeta[c] = s_dy
        a = gamma[c] * rstd
        # training: every element gets the mean terms; evaluation: none (dz is zero off the maxima)
        c0 = -a * (s_dy / count - m * rstd * s_dyx / count) if training else 0.0
        c1 = -a * rstd * s_dyx / count if training else 0.0
        for b in range(nb):
            for e in range(nh * nw):
                dflat[b, c, e] = c0 + c1 * flat[b, c, e]
        for b in range(nb):  # dy reaches each window's maximum where the ReLU passed it (not NaN)
            for i in range(ho):
                for j in range(wo):
                    if out[b, c, i, j] > 0.0:
                        k = arg[b, c, i, j]
                        dz[b, c, 2 * i + k // 2, 2 * j + k % 2] += a * grad[b, c, i, j]


def threads() -> None:
    """Run numba's loops on torch's thread count (both share libgomp's pool: see experiments.runner)."""
    n = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
        torch.set_num_threads(n)


@torch.no_grad()
def update_running_stats(running_mean, running_var, mean, var, count: int, momentum: float) -> None:
    """torch's rule, in place: r <- (1 - momentum) r + momentum s, the running variance taking the unbiased batch
    variance var count / (count - 1) (``mean``, ``var``: the batch's, biased, over ``count`` elements)."""
    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
    unbiased = var * (count / max(count - 1, 1))
    running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


class _BNReLUPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, gamma, beta, running_mean, running_var, training: bool, momentum: float, eps: float):
        z = z.contiguous()
        nb, nc, nh, nw = z.shape
        out = z.new_empty(nb, nc, nh // 2, nw // 2)
        arg = torch.empty(out.shape, dtype=torch.uint8)
        # statistics in float64 whatever z's dtype (torch accumulates float32 BN sums in double on the CPU too)
        if training:
            mean = torch.empty(nc, dtype=torch.float64)
            var = torch.empty(nc, dtype=torch.float64)
        else:
            mean, var = running_mean.to(torch.float64, copy=True), running_var.to(torch.float64, copy=True)
        threads()
        _forward(
            z.numpy(), gamma.detach().double().numpy(), beta.detach().double().numpy(), mean.numpy(),
            var.numpy(), eps, training, out.numpy(), arg.numpy(),
        )  # fmt: skip
        if training:
            update_running_stats(running_mean, running_var, mean, var, nb * nh * nw, momentum)
        ctx.save_for_backward(z, gamma, mean, var, out, arg)
        ctx.training, ctx.eps = training, eps
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        z, gamma, mean, var, out, arg = ctx.saved_tensors
        dz = torch.empty_like(z)
        dgamma = torch.empty(z.shape[1], dtype=torch.float64)
        dbeta = torch.empty(z.shape[1], dtype=torch.float64)
        threads()
        _backward(
            z.numpy(), gamma.detach().double().numpy(), mean.numpy(), var.numpy(), ctx.eps, ctx.training,
            out.numpy(), arg.numpy(), grad.contiguous().numpy(), dz.numpy(), dgamma.numpy(), dbeta.numpy(),
        )  # fmt: skip
        return dz, dgamma.to(gamma.dtype), dbeta.to(gamma.dtype), None, None, None, None, None


def fusable(z: torch.Tensor) -> bool:
    """The fused tail runs on CPU float32/float64 (B, C, H, W) activations of at least 2x2."""
    return (
        z.device.type == "cpu"
        and z.dtype in (torch.float32, torch.float64)
        and z.dim() == 4
        and z.shape[2] >= 2
        and z.shape[3] >= 2
    )


def bn_relu_pool(
    z: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``max_pool2d(relu(batch_norm(z, ...)), 2)`` per channel of z (B, C, H, W), in one fused CPU pass;
    running statistics updated in place in training mode, as ``F.batch_norm`` does. Not twice differentiable."""
    return _BNReLUPool.apply(z, gamma, beta, running_mean, running_var, training, momentum, eps)


def relu_pool(z: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(relu(z), 2)`` in the same fused pass, normalising by nothing: evaluation-mode statistics
    mean 0, var 1, eps 0 and gamma 1, beta 0 make y = z exactly and the gradient dz = dy."""
    c = z.shape[1]
    one, zero = torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    return _BNReLUPool.apply(z, one, zero, zero, one, False, 0.0, 0.0)
