"""A CNN's first block, conv -> BN -> ReLU -> 2x2 max pool on the shared input, in one CPU pass (numba).

Every network of a batched run reads the same input batch x (B, C_in, H, W), and a first convolution has few taps
per output, D = C_in k^2 (9 for M3, 25 for M1). Its output z (B, N*C, H, W) is the network's largest activation
(10 MB per network on MNIST); unfused, it is written, read for BN's statistics, read by the fused tail and by its
backward, and its gradient written and read again: ~7 of the 24-31 ms of an M1 or M3 step (torch.profiler). Here z
never leaves the core's L1 cache. With p the D-vector patch of x under an output position, over the count = B H W
positions ``m = mean(p)`` and ``S = cov(p)`` (biased), shared by every channel of every network:

- statistics without a pass over z: channel c's batch mean and biased variance are ``mu_c = w_c . m + b_c`` and
  ``var_c = w_c^T S w_c``;
- forward: per image and channel, z is convolved into a small buffer and normalised as torch does,
  ``y = (z - mu) gamma rstd + beta``; only ``maxpool2x2(relu(y))`` and each window's offset are written;
- backward: ``dy`` is the pooled gradient g at each window's (first) maximum where the ReLU passed it, 0
  elsewhere (as in ``bnlab.nn.fused``). With ``A_c = sum dy p`` (one correlation of dy with x per image and
  channel, in cache) and ``s_c = sum dy``, BN's training-mode gradient
  ``dz = gamma rstd (dy - mean(dy) - xhat mean(dy xhat))`` summed against the patches gives
      ``dbeta_c = s_c``,  ``dgamma_c = rstd_c w_c . (A_c - s_c m)``,
      ``dw_c = gamma_c rstd_c (A_c - s_c m - dgamma_c rstd_c S w_c)``,  ``db_c = 0``
  (because ``sum xhat p = count rstd S w``); in evaluation mode ``dz = gamma rstd dy``, without BN ``dz = dy``.
The moments are taken of x minus its batch mean c0 (S does not change, and it is not a small difference of large
sums); the convolution reads x itself, so that z rounds as torch's does (equal windows tie as they do there). No
gradient for x: it is data.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F

from bnlab.nn.fused import FASTMATH, threads, update_running_stats, window_relu_max

# D = C_in k^2 up to which the block pays: its cost grows with D, the unfused path's hardly. Forward + parameter
# gradients, 100 images, 2 threads, against oneDNN's conv + the fused tail (benchmarks/input_block.py, 19:50 UTC):
# D = 9 (M3) 2.8-3.1x faster, D = 25 (M1) 1.2-1.4x, D = 27 (M3 on CIFAR-10) 0.95-0.98x, D = 75 (M1 on CIFAR-10)
# 0.6-0.9x.
MAX_TAPS = 25


# Two layouts of the input. The moments read x - c0, each padded image flat: with the padded width wp = W + k - 1,
# output position (i, j) is P = i wp + j and tap t = (input channel q, row a, column e) reads x_flat[P + o_t],
# o_t = q hp wp + a wp + e, over P in [0, H wp), the k - 1 junk columns P % wp >= W masked out (one extra zero
# row at the bottom keeps P + o_t inside the image). The convolution reads the phase layout of ``_phase_input``.
# Every inner loop is a separate njit function over contiguous slices (the shifted operand as x[o : o + n]):
# written inline in a prange body, or indexed x[P + o], numba's loops did not vectorise (4-10x slower, measured).


@numba.njit(fastmath=FASTMATH)
def _dot(a, b):  # pragma: no cover - compiled
    s = a.dtype.type(0)
    for p in range(a.shape[0]):
        s += a[p] * b[p]
    return s


@numba.njit(fastmath=FASTMATH)
def _dot4(a, b0, b1, b2, b3):  # pragma: no cover - compiled
    """Four dot products sharing the loads of a."""
    s0 = s1 = s2 = s3 = a.dtype.type(0)
    for p in range(a.shape[0]):
        s0 += a[p] * b0[p]
        s1 += a[p] * b1[p]
        s2 += a[p] * b2[p]
        s3 += a[p] * b3[p]
    return s0, s1, s2, s3


@numba.njit(fastmath=FASTMATH)
def _axpy(y, alpha, x):  # pragma: no cover - compiled
    for p in range(y.shape[0]):
        y[p] += alpha * x[p]


@numba.njit(fastmath=FASTMATH)
def _axpy4(y, a0, x0, a1, x1, a2, x2, a3, x3):  # pragma: no cover - compiled
    """y += a0 x0 + ... + a3 x3: four taps per load and store of y (the loop is bound by them, not by FMAs)."""
    for p in range(y.shape[0]):
        y[p] += a0 * x0[p] + a1 * x1[p] + a2 * x2[p] + a3 * x3[p]


@numba.njit(fastmath=FASTMATH)
def _conv_plane(z, bias, w, xb, offsets, n):  # pragma: no cover - compiled
    """z = bias + sum_t w[t] xb[offsets[t] : offsets[t] + n]."""
    z[:] = bias
    d = offsets.shape[0]
    t = 0
    while t + 4 <= d:
        o0, o1, o2, o3 = offsets[t], offsets[t + 1], offsets[t + 2], offsets[t + 3]
        _axpy4(z, w[t], xb[o0 : o0 + n], w[t + 1], xb[o1 : o1 + n], w[t + 2], xb[o2 : o2 + n], w[t + 3],
               xb[o3 : o3 + n])  # fmt: skip
        t += 4
    for u in range(t, d):
        _axpy(z, w[u], xb[offsets[u] : offsets[u] + n])


@numba.njit(fastmath=FASTMATH)
def _correlate(acc, dy, xb, offsets, n):  # pragma: no cover - compiled
    """acc[t] += sum_p dy[p] xb[offsets[t] + p] (float64 accumulation across calls)."""
    d = offsets.shape[0]
    t = 0
    while t + 4 <= d:
        o0, o1, o2, o3 = offsets[t], offsets[t + 1], offsets[t + 2], offsets[t + 3]
        s0, s1, s2, s3 = _dot4(dy, xb[o0 : o0 + n], xb[o1 : o1 + n], xb[o2 : o2 + n], xb[o3 : o3 + n])
        acc[t] += s0
        acc[t + 1] += s1
        acc[t + 2] += s2
        acc[t + 3] += s3
        t += 4
    for u in range(t, d):
        acc[u] += _dot(dy, xb[offsets[u] : offsets[u] + n])


@numba.njit(fastmath=FASTMATH)
def _masked(dst, mask, x):  # pragma: no cover - compiled
    s = x.dtype.type(0)
    for p in range(dst.shape[0]):
        dst[p] = mask[p] * x[p]
        s += dst[p]
    return s


@numba.njit(fastmath=FASTMATH)
def _pool(z0, z1, z2, z3, m, sc, sh, out, arg):  # pragma: no cover - compiled
    for p in range(out.shape[0]):
        out[p], arg[p] = window_relu_max((z0[p] - m) * sc + sh, (z1[p] - m) * sc + sh, (z2[p] - m) * sc + sh,
                                         (z3[p] - m) * sc + sh)  # fmt: skip


@numba.njit(fastmath=FASTMATH)
def _unpool(out, arg, grad, d0, d1, d2, d3):  # pragma: no cover - compiled
    """dy on the four window planes: g at the window's maximum where the ReLU passed it (not NaN), else 0."""
    total = 0.0
    for p in range(out.shape[0]):
        g = grad[p] if out[p] > 0.0 else 0.0
        o = arg[p]
        total += g
        d0[p] = g if o == 0 else 0.0
        d1[p] = g if o == 1 else 0.0
        d2[p] = g if o == 2 else 0.0
        d3[p] = g if o == 3 else 0.0
    return total


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True)
def _patch_moments(xflat, offsets, mask, sums, gram):  # pragma: no cover - compiled
    """Per image b: ``sums[b, t] = sum p_t`` and ``gram[b, t, u] = sum p_t p_u`` over its H W positions (an
    image's sums in x's dtype, stored as float64 and summed across images in float64 by the caller), ``mask`` 1 on
    the real positions, 0 on the junk columns."""
    nb, d, n = xflat.shape[0], offsets.shape[0], mask.shape[0]
    for b in numba.prange(nb):
        xb = xflat[b]
        pt = np.empty(n, dtype=xflat.dtype)
        for t in range(d):
            sums[b, t] = _masked(pt, mask, xb[offsets[t] : offsets[t] + n])
            for u in range(t, d):
                gram[b, t, u] = gram[b, u, t] = _dot(pt, xb[offsets[u] : offsets[u] + n])


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True)
def _forward(xphase, offsets, weight, bias, mu, scale, shift, out, arg):  # pragma: no cover - compiled
    """``out[b, c] = maxpool2x2(relu((conv(x[b], weight[c]) + bias[c] - mu[c]) scale[c] + shift[c]))``, ``arg``
    each window's offset: per image and channel, the windows' four positions as four planes z_s, in a buffer."""
    nb, nc, ho, wo = out.shape
    n = ho * wo
    for c in numba.prange(nc):
        z = np.empty((4, n), dtype=xphase.dtype)
        for b in range(nb):
            xb = xphase[b]
            for s in range(4):
                _conv_plane(z[s], bias[c], weight[c], xb, offsets[s], n)
            _pool(z[0], z[1], z[2], z[3], mu[c], scale[c], shift[c], out[b, c].reshape(n), arg[b, c].reshape(n))


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH, nogil=True)
def _backward(xphase, offsets, out, arg, grad, acc, sums):  # pragma: no cover - compiled
    """``acc[c, t] = sum dy p_t`` and ``sums[c] = sum dy`` over images and positions (float64), dy the pooled
    gradient placed at each window's maximum where the ReLU passed it (not NaN), 0 elsewhere."""
    nb, nc, ho, wo = out.shape
    n = ho * wo
    for c in numba.prange(nc):
        dy = np.empty((4, n), dtype=xphase.dtype)
        for b in range(nb):
            xb = xphase[b]
            sums[c] += _unpool(out[b, c].reshape(n), arg[b, c].reshape(n), grad[b, c].reshape(n), dy[0], dy[1],
                               dy[2], dy[3])  # fmt: skip
            for s in range(4):
                _correlate(acc[c], dy[s], xb, offsets[s], n)


def _flat_input(x: torch.Tensor, k: int, c0: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(x - c0 zero-padded by k // 2 with one extra bottom row, flat per image (B, C_in hp wp); tap offsets o_t;
    the mask of real positions among the H wp; wp): the moments' layout."""
    nb, ci, h, w = x.shape
    pad = k // 2
    xp = F.pad(x - c0, (pad, pad, pad, pad + 1), value=-c0)  # padding shifted too: one constant shift everywhere
    hp, wp = xp.shape[2], xp.shape[3]
    q, a, e = torch.meshgrid(torch.arange(ci), torch.arange(k), torch.arange(k), indexing="ij")
    offsets = (q * hp * wp + a * wp + e).reshape(-1)
    mask = (torch.arange(h * wp) % wp < w).to(x.dtype)
    return xp.reshape(nb, -1).contiguous(), offsets, mask, wp


def _phase_input(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution's layout, in which a window position s = (di, dj) of every pooled output (i, j) is one
    flat plane P = i wo + j (so that pooling and its gradient run elementwise over contiguous planes of H/2 W/2:
    every other element of z, or rows of W/2 = 14, did not vectorise). x, zero-padded, is split into its phases
    x_pq[u, v] = x_pad[2u + p, 2v + q] and each phase into column-shifted copies X_pqf[u, j] = x_pq[u, j + f],
    (hq, wo) each, f <= k // 2; output (2i + di, 2j + dj) reads tap t = (channel, a, e) at P + offsets[s, t]."""
    nb, ci, h, w = x.shape
    pad, ho, wo = k // 2, h // 2, w // 2
    hq, wq, nf = ho + pad, wo + pad, pad + 1
    xp = F.pad(x, (pad, 2 * wq - w - pad, pad, 2 * hq - h - pad))  # negative padding crops an odd H, W
    phases = xp.reshape(nb, ci, hq, 2, wq, 2).permute(0, 1, 3, 5, 2, 4)  # (B, C_in, p, q, hq, wq)
    shifted = torch.stack([phases[..., f : f + wo] for f in range(nf)], dim=4)  # (B, C_in, p, q, f, hq, wo)
    di, dj, q, a, e = torch.meshgrid(*(torch.arange(n) for n in (2, 2, ci, k, k)), indexing="ij")
    r, cc = di + a, dj + e
    offsets = ((((q * 2 + r % 2) * 2 + cc % 2) * nf + cc // 2) * hq + r // 2) * wo
    return shifted.reshape(nb, -1).contiguous(), offsets.reshape(4, -1).contiguous()


def input_block_pays(x: torch.Tensor, c_in: int, k: int) -> bool:
    """The fused first block runs on CPU float32/float64 input (B, C_in, H, W) of data (no gradient), odd k
    ('same' padding), at least 2x2, and D = C_in k^2 <= ``MAX_TAPS``."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and x.shape[1] == c_in
        and not x.requires_grad
        and k % 2 == 1
        and c_in * k * k <= MAX_TAPS
        and x.shape[2] >= 2
        and x.shape[3] >= 2
    )


@dataclass
class _Prepared:
    """What the block derives from one input batch x and kernel size k, whatever the filters: the phase layout
    and, once training asks for them, the patch moments m and S. Every group of networks of a step reads the same
    batch, so the last ones are kept (``_prepared``)."""

    x: weakref.ref
    version: int
    k: int
    xphase: torch.Tensor
    offsets: torch.Tensor
    moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def matches(self, x: torch.Tensor, k: int) -> bool:
        # the same live tensor object, not modified in place since (torch bumps _version on every in-place op)
        return self.x() is x and self.version == x._version and self.k == k

    def patch_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, S): the mean and biased covariance of the patches over the B H W positions, float64, from the
        patches' moments about the batch mean c0."""
        if self.moments is None:
            nb, ci, h, w = x.shape
            d, count = ci * self.k * self.k, nb * h * w
            c0 = x.double().mean().item()
            c0 = c0 if math.isfinite(c0) else 0.0  # a NaN or inf pixel: NaN statistics, as in torch
            xflat, offsets, mask, _ = _flat_input(x, self.k, c0)
            sums = torch.empty(nb, d, dtype=torch.float64)
            gram = torch.empty(nb, d, d, dtype=torch.float64)
            _patch_moments(xflat.numpy(), offsets.numpy(), mask.numpy(), sums.numpy(), gram.numpy())
            m = sums.sum(0) / count
            self.moments = (m + c0, gram.sum(0) / count - torch.outer(m, m))
        return self.moments


# The last two batches read, most recent first: on a logged step the trainer alternates between the test batch and
# the training batch, group by group.
_recent: list[_Prepared] = []


def _prepared(x: torch.Tensor, k: int) -> _Prepared:
    for prep in _recent:
        if prep.matches(x, k):
            return prep
    prep = _Prepared(weakref.ref(x), x._version, k, *_phase_input(x, k))
    _recent[:] = [prep, *_recent[:1]]
    return prep


class _InputBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, running_mean, running_var, training, momentum, eps):
        nc, ci, k = weight.shape[0], weight.shape[1], weight.shape[2]
        nb, _, h, w = x.shape
        d, count = ci * k * k, nb * h * w
        threads()
        prep = _prepared(x, k)
        bn = gamma is not None
        m, cov = prep.patch_moments(x) if bn and training else (None, None)
        wflat = weight.detach().reshape(nc, d).contiguous()
        w64, b64 = wflat.double(), bias.detach().double()
        if bn and training:
            mu = w64 @ m + b64
            var = ((w64 @ cov) * w64).sum(1).clamp_min(0.0)
            update_running_stats(running_mean, running_var, mu, var, count, momentum)
        elif bn:
            mu, var = running_mean.double(), running_var.double()
        if bn:
            rstd = (var + eps).rsqrt()
            scale, shift = gamma.detach().double() * rstd, beta.detach().double()
        else:  # y = z: nothing subtracted, scaled by 1
            mu = shift = torch.zeros(nc, dtype=torch.float64)
            rstd = scale = torch.ones(nc, dtype=torch.float64)
        out = x.new_empty(nb, nc, h // 2, w // 2)
        arg = torch.empty(out.shape, dtype=torch.uint8)
        xphase, poffsets = prep.xphase, prep.offsets
        _forward(
            xphase.numpy(), poffsets.numpy(), wflat.numpy(), bias.detach().contiguous().numpy(),
            *(v.to(x.dtype).numpy() for v in (mu, scale, shift)), out.numpy(), arg.numpy(),
        )  # fmt: skip
        ctx.save_for_backward(xphase, poffsets, out, arg)
        ctx.moments = (m, cov, w64, b64, mu, rstd)
        ctx.bn, ctx.training = bn, training
        ctx.gamma = gamma.detach().double() if bn else None
        ctx.shapes = (weight.shape, weight.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        xphase, offsets, out, arg = ctx.saved_tensors
        m, cov, w64, b64, mu, rstd = ctx.moments
        nc, d = w64.shape
        acc = torch.zeros(nc, d, dtype=torch.float64)
        s = torch.zeros(nc, dtype=torch.float64)
        threads()
        _backward(
            xphase.numpy(), offsets.numpy(), out.numpy(), arg.numpy(), grad.contiguous().numpy(),
            acc.numpy(), s.numpy(),
        )  # fmt: skip
        dgamma = dbeta = None
        if ctx.bn and ctx.training:
            r = acc - s[:, None] * m  # A - s m
            dgamma = rstd * (w64 * r).sum(1)
            dw = (ctx.gamma * rstd)[:, None] * (r - (dgamma * rstd)[:, None] * (w64 @ cov))
            db = torch.zeros_like(s)
        else:
            dz_scale = ctx.gamma * rstd if ctx.bn else torch.ones_like(s)
            dw = dz_scale[:, None] * acc
            db = dz_scale * s
            if ctx.bn:
                dgamma = rstd * ((w64 * acc).sum(1) + (b64 - mu) * s)  # sum dy (z - mu) rstd, z = w p + b
        if ctx.bn:
            dbeta = s
        shape, dtype = ctx.shapes
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        return None, dw.reshape(shape).to(dtype), cast(db), cast(dgamma), cast(dbeta), None, None, None, None, None


def conv_bn_relu_pool(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``max_pool2d(relu(batch_norm(conv2d(x, weight, bias, padding=k // 2), ...)), 2)`` for input data x
    (B, C_in, H, W) and filters weight (C, C_in, k, k), BN per output channel, in one fused CPU pass; ``gamma``
    None leaves BN out (``max_pool2d(relu(conv2d(...)), 2)``). Running statistics are updated in place in training
    mode, as ``F.batch_norm`` does. Once differentiable, in the parameters only."""
    return _InputBlock.apply(x, weight, bias, gamma, beta, running_mean, running_var, training, momentum, eps)
