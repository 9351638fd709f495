"""'Same' 2-D convolution on the CPU through small DFTs written as real GEMMs, forward and backward.

``conv2d_same(x, w, b, groups) == F.conv2d(x, w, b, padding=k // 2, groups=groups)`` for x (B, C, H, W),
w (O, C / groups, k, k), odd k, stride 1. In the frequency domain the channel mixing of every output pixel
becomes one complex matrix product per frequency, ``Y_f = X_f Wc_f`` ((B, C) @ (C, O)), which costs
``8 B C O`` real FLOPs per frequency instead of ``2 B C O k^2`` per pixel: for M1's conv2 (5x5, 14x14 planes)
8.5x fewer mixing FLOPs, where direct convolution already runs near the core's peak.

Transform size. The output is cropped to H x W, so a *circular* convolution of size N agrees with the linear one
as soon as no wrapped index lands on data: ``N_h >= H + k//2`` (and likewise N_w), not H + k - 1; we take the
equality (any N works: the DFTs are dense matrices). With ``K_w = N_w // 2 + 1`` (x is real) the transform has
``F = N_h K_w`` frequencies ``f = (u, v)``, and with ``theta_f(h, w) = 2 pi (u h / N_h + v w / N_w)``:

    forward DFT       ``X_f = sum_{h,w} x[h, w] exp(-i theta_f(h, w))``
    weights            ``Wc_f[c, o] = sum_{d} w[o, c, d + p] exp(+i theta_f(d))``, d in [-p, p]^2, p = k//2
    output             ``y[h, w] = 1/(N_h N_w) sum_f m_v Re(Y_f exp(+i theta_f(h, w)))`` for h < H, w < W,
                       m_v = 1 for v = 0 or v = N_w / 2, else 2 (the other half-plane is the conjugate);
                       the bias adds ``N_h N_w b`` to Y at f = 0
    grad_x             ``GX_f = G_f conj(Wc_f)^T``, then the same inverse (correlation with the flipped kernel)
    grad_w             ``M_f = X_f^T conj(G_f)`` ((C, B) @ (B, O)); ``gw[o, c, d + p] = 1/(N_h N_w) sum_f m_v
                       Re(M_f[c, o] exp(+i theta_f(d)))``; X_f is saved by the forward pass
    grad_b             ``sum_{b,h,w} g = sum_b Re G_0[b, :]`` (g's transform at f = 0, already computed)

No torch.fft call: on M1's small planes rfft2 and irfft2 cost more than the direct forward convolution
(measured). Each DFT is two real GEMMs against precomputed matrices (along W, then along H), ordered so that
every operand is a strided view that BLAS reads in place and the frequency-domain tensors come out as
``(2, F, B, C)``: real and imaginary parts split, frequency-major, one contiguous (B, C) matrix per frequency,
which is what the batched mixing GEMMs (``torch.bmm`` over F) need. Intermediates that do not outlive a call
live in per-thread scratch buffers (:class:`_Workspace`), so that the kernel does not page them in afresh.

Evidence (benchmarks/conv_fft.py, batch 100, float32, 1 thread, thread CPU time, best of 5, 2-core Xeon
(AVX-512), measured while other jobs ran, 3 runs on 2026-11-26 17:04 UTC): forward + backward vs F.conv2d
  M1 conv2 32->64 14x14 5x5   1.9-2.1x  (~15 vs ~30 ms; F.conv2d at ~200 GFLOP/s); 1.8x at 2 threads (wall)
  M1 CIFAR conv2 64->64 16x16 2.3-2.6x;  64->64 8x8 5x5 2.0x;  8 stacked M1 conv2 (groups=8) 2.0-2.1x
  M3 conv2 32->64 14x14 3x3   1.0-1.1x  (break-even);  16->16 14x14 5x5 1.1-1.2x
  M1 conv1 1->32 28x28 5x5    0.2-0.7x  (C = 1: nothing to mix, the transforms are all the cost)
Where the time goes (M1 conv2, 12.5-13.5 ms, timed inside the pass while other jobs ran): the 3 mixing products ~5.6 ms
(4 real batched GEMMs each, ~125 GFLOP/s, ~70% of what one large sgemm reaches on this core), the transforms
~5.8 ms (GEMMs with K or M <= 2N streaming 3-7 MB tensors, 55-140 GFLOP/s), the weight DFT and gradient ~0.6
ms, the rest ~0.6 ms. Tried and dropped (no net gain, measured): Gauss's three-product complex multiplication
with the extra operand combinations folded into the DFT matrices (mixing 1.5 ms faster, transforms and weights
1.4 ms slower); one GEMM per product with K = 2C (needs real and imaginary parts adjacent in the channel axis,
which neither DFT step can write from NCHW input, and a permuting copy costs what it saves); running the batch
in cache-sized chunks (the mixing GEMMs lose more with fewer rows than the transforms gain). :func:`fft_pays`
says where it wins. float64: F.conv2d has no fast path there (~30 GFLOP/s); this is 2x (M3 3x3) to 9x faster,
5.7x on M1 conv2, and loses only on conv1 (0.4x).
"""

from __future__ import annotations

import functools
import math
import threading
from typing import NamedTuple

import numpy as np
import torch


class _Workspace(threading.local):
    """Scratch buffers for the intermediates that do not outlive a call (each transform's middle step, the
    mixing products, g's spectrum): one flat buffer per role and dtype, grown to the largest size asked for up to
    ``limit`` bytes and kept by the thread (larger requests get a tensor of their own, as evaluation in chunks of
    1000 examples does: that memory is not held after the call). Why: allocated fresh, M1 conv2's 3-7 MB
    tensors were page-faulted in again on most calls (glibc returns large freed blocks to the kernel), 1-2 ms of
    system time per forward + backward (measured)."""

    def __init__(self, limit: int = 16 * 2**20) -> None:
        self.limit = limit
        self.bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A (shape, dtype) view of the ``role`` buffer, uninitialised; valid until ``role`` is asked for again."""
        n = math.prod(shape)
        if n * dtype.itemsize > self.limit:
            return torch.empty(shape, dtype=dtype)
        buf = self.bufs.get((role, dtype))
        if buf is None or buf.numel() < n:
            buf = self.bufs[(role, dtype)] = torch.empty(n, dtype=dtype)
        return buf[:n].view(shape)


_WORKSPACE = _Workspace()


class _Plan(NamedTuple):
    """The real DFT matrices of one (H, W, k, dtype); row/column orders as commented in :func:`_plan`."""

    dw: torch.Tensor  # (2 K_w, W)  forward along W
    dh: torch.Tensor  # (2 N_h, 2 H)  forward along H
    ih: torch.Tensor  # (2 H, 2 N_h)  inverse along H, cropped
    iw: torch.Tensor  # (2 K_w, W)  inverse along W, real part, scaled
    kern: torch.Tensor  # (k^2, 2F)  kernel offsets -> Wc
    kern_inv: torch.Tensor  # (k^2, 2F)  M -> weight gradient
    nh: int  # N_h
    kw: int  # K_w
    size: int  # N_h N_w


@functools.lru_cache(maxsize=64)
def _plan(h: int, w: int, k: int, dtype: torch.dtype) -> _Plan:
    """DFT matrices for H x W planes, kernel k (built in float64, cast once per shape and dtype)."""
    p = k // 2
    nh, nw = h + p, w + p  # the smallest circular size that leaves the cropped output exact (module docstring)
    kw = nw // 2 + 1
    mult = np.full(kw, 2.0)
    mult[0] = 1.0
    if nw % 2 == 0:
        mult[-1] = 1.0
    ah = 2 * np.pi * np.arange(nh)[:, None] * np.arange(h)[None, :] / nh  # (N_h, H): u h / N_h
    aw = 2 * np.pi * np.arange(kw)[:, None] * np.arange(w)[None, :] / nw  # (K_w, W): v w / N_w
    # forward along W: rows (ri, v), cols w; T = x e^{-i aw} -> (cos, -sin)
    dw = np.concatenate([np.cos(aw), -np.sin(aw)])  # (2 K_w, W)
    # forward along H on complex T (rows (h, ri_T)) -> Z rows (ri_Z, u): Zr = cos Tr + sin Ti, Zi = cos Ti - sin Tr
    ch, sh = np.cos(ah), np.sin(ah)  # (N_h, H)
    dh = np.zeros((2, nh, h, 2))
    dh[0, :, :, 0], dh[0, :, :, 1] = ch, sh
    dh[1, :, :, 0], dh[1, :, :, 1] = -sh, ch
    # inverse along H, cropped to h < H: U = sum_u Y e^{+i ah}: Ur = cos Yr - sin Yi, Ui = sin Yr + cos Yi
    ih = np.zeros((h, 2, 2, nh))  # rows (h, ri_U), cols (ri_Y, u)
    ih[:, 0, 0, :], ih[:, 0, 1, :] = ch.T, -sh.T
    ih[:, 1, 0, :], ih[:, 1, 1, :] = sh.T, ch.T
    # inverse along W (real part), with the half-plane multiplicities and 1/(N_h N_w): rows (ri_U, v), cols w
    scale = mult[:, None] / (nh * nw)
    iw = np.concatenate([scale * np.cos(aw), -scale * np.sin(aw)])  # (2 K_w, W)
    # kernel offsets d in [-p, p]^2 against every frequency: theta = 2 pi (u dh / N_h + v dw / N_w)
    d = np.arange(-p, p + 1)
    theta = (
        2
        * np.pi
        * (
            d[:, None, None, None] * np.arange(nh)[None, None, :, None] / nh
            + d[None, :, None, None] * np.arange(kw)[None, None, None, :] / nw
        )
    )  # (k, k, N_h, K_w)
    theta = theta.reshape(k * k, nh * kw)
    kern = np.concatenate([np.cos(theta), np.sin(theta)], axis=1)  # (k^2, 2F): Wc = w @ kern
    m = np.broadcast_to(mult, (nh, kw)).reshape(-1) / (nh * nw)
    kern_inv = np.concatenate([m * np.cos(theta), -m * np.sin(theta)], axis=1)  # (k^2, 2F): gw = kern_inv @ M
    mats = (dw, dh.reshape(2 * nh, 2 * h), ih.reshape(2 * h, 2 * nh), iw, kern, kern_inv)
    return _Plan(*(torch.from_numpy(np.ascontiguousarray(m)).to(dtype) for m in mats), nh, kw, nh * nw)


def _forward_dft(x: torch.Tensor, plan: _Plan, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, C, H, W) real -> X (2, F, B, C): X[0] real parts, X[1] imaginary, f = (u, v) row-major; written
    into ``out`` when given, else into a new tensor."""
    nb, nc, h, w = x.shape
    nh, kw = plan.nh, plan.kw
    p_ = nb * nc
    # along W, one GEMM per row h: T[h] = dw (2 K_w, W) @ x[:, :, h, :]^T (W, P), read in place (strided view)
    xt = x.reshape(p_, h, w).permute(1, 2, 0)  # (H, W, P)
    t = torch.matmul(plan.dw, xt, out=_WORKSPACE.get("t", (h, 2 * kw, p_), x.dtype))  # rows (h, ri_T), cols (v, P)
    # along H, one GEMM: Z = dh (2 N_h, 2H) @ T (2H, K_w P)
    z = x.new_empty(2, nh * kw, nb, nc) if out is None else out
    torch.mm(plan.dh, t.view(2 * h, kw * p_), out=z.view(2 * nh, kw * p_))  # (ri, u), (v, b, c)
    return z


def _inverse_dft(y: torch.Tensor, plan: _Plan, out: torch.Tensor) -> None:
    """Y (2, F, B, O) -> ``out`` (B, O, H, W) real, the cropped inverse of :func:`_forward_dft`; ``out`` may be
    a channel slice of a larger output."""
    _, _, nb, no = y.shape
    h, w = out.shape[2:]
    p_ = nb * no
    u = _WORKSPACE.get("u", (2 * h, plan.kw * p_), y.dtype)
    torch.mm(plan.ih, y.view(2 * plan.nh, plan.kw * p_), out=u)  # (2H, K_w P) = (h, ri_U, v, P)
    u = u.view(h, 2 * plan.kw, p_).transpose(1, 2)  # (H, P, 2 K_w)
    # along W: V[h] = U[h]^T (P, 2 K_w) @ iw (2 K_w, W), one batched GEMM into a contiguous (H, P, W), then one
    # permuting copy into out. Writing out[:, :, h, :] in place instead (a strided result) makes torch run one
    # GEMM per row h: as fast on one thread, 10% slower for the whole pass on two (measured)
    v = torch.matmul(u, plan.iw, out=_WORKSPACE.get("v", (h, p_, w), y.dtype))
    out.copy_(v.view(h, nb, no, w).permute(1, 2, 0, 3))


def _weight_dft(w: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """w (O, C, k, k) -> Wc^T (2, F, O, C), ``Wc_f[c, o] = sum_d w[o, c, d + p] exp(+i theta_f(d))``: one GEMM
    whose output is already frequency-major (w is read transposed in place)."""
    no, nc, k, _ = w.shape
    wc = torch.mm(plan.kern.t(), w.reshape(no * nc, k * k).t())  # (2F, O C)
    return wc.view(2, -1, no, nc)


def _weight_grad(mt: torch.Tensor, k: int, plan: _Plan) -> torch.Tensor:
    """M^T (2, F, O, C) -> gw (O, C, k, k), ``gw[o, c, d + p] = sum_f m_f Re(M_f[c, o] exp(+i theta_f(d)))``
    (m_f, 1/(N_h N_w) in kern_inv): one GEMM writing gw contiguous."""
    _, nf, no, nc = mt.shape
    gw = torch.mm(mt.view(2 * nf, no * nc).t(), plan.kern_inv.t())  # (O C, k^2)
    return gw.view(no, nc, k, k)


def _mix(a: torch.Tensor, b: torch.Tensor, conj_a: bool, conj_b: bool) -> torch.Tensor:
    """Per-frequency complex product ``op(A_f) op(B_f)`` of split (2, F, m, n) tensors, op = conj optionally,
    into the workspace (valid until the next call). Operands may be transposed views (bmm reads them in place);
    four real batched GEMMs, the sums fused into the GEMM's accumulation (baddbmm)."""
    ar, ai, br, bi = a[0], a[1], b[0], b[1]
    sa, sb = (-1 if conj_a else 1), (-1 if conj_b else 1)
    out = _WORKSPACE.get("mix", (2, ar.shape[0], ar.shape[1], br.shape[2]), a.dtype)
    re, im = out[0], out[1]
    torch.bmm(ar, br, out=re)  # re = ar br - (sa ai)(sb bi)
    re.baddbmm_(ai, bi, alpha=-sa * sb)
    torch.baddbmm(im, ar, bi, beta=0, alpha=sb, out=im)  # im = ar (sb bi) + (sa ai) br
    im.baddbmm_(ai, br, alpha=sa)
    return out


def _packed(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when contiguous, else a contiguous copy in the workspace (a group's channel slice)."""
    return t if t.is_contiguous() else _WORKSPACE.get("in", tuple(t.shape), t.dtype).copy_(t)


class _ConvSame(torch.autograd.Function):
    """One group at a time: x's and g's channel slices are copied contiguous (into the workspace) and each group
    runs the whole pipeline. Why not all groups in one pass (transforms over every plane, per-group mixing): for
    8 stacked M1 networks its 30-60 MB frequency-domain tensors left the caches and it ran 1.8x slower than this
    (measured)."""

    @staticmethod
    def forward(ctx, x, w, b, groups):
        nb, _, h, wd = x.shape
        k = w.shape[-1]
        plan = _plan(h, wd, k, x.dtype)
        y = x.new_empty(nb, w.shape[0], h, wd)
        bias = b.chunk(groups) if b is not None else [None] * groups
        saved = []
        for xg, wg, bg, yg in zip(x.chunk(groups, 1), w.chunk(groups), bias, y.chunk(groups, 1), strict=True):
            xf = _forward_dft(_packed(xg), plan)  # (2, F, B, C), kept for grad_w
            wct = _weight_dft(wg.contiguous(), plan)  # (2, F, O, C)
            yf = _mix(xf, wct.transpose(2, 3), False, False)  # (2, F, B, O)
            if bg is not None:  # a constant over the whole circular plane is N_h N_w b at frequency 0 only
                yf[0, 0] += plan.size * bg
            _inverse_dft(yf, plan, yg)
            saved += [xf, wct]
        ctx.save_for_backward(*saved)
        ctx.shape = (h, wd, k, groups)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        h, wd, k, groups = ctx.shape
        saved = ctx.saved_tensors
        plan = _plan(h, wd, k, g.dtype)
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        nc = saved[0].shape[3] * groups
        gx = g.new_empty(g.shape[0], nc, h, wd) if need_x else None
        gws, gbs = [], []
        if need_x or need_w:
            gx_parts = gx.chunk(groups, 1) if need_x else [None] * groups
            for i, (gg, gxg) in enumerate(zip(g.chunk(groups, 1), gx_parts, strict=True)):
                xf, wct = saved[2 * i], saved[2 * i + 1]
                gf = _WORKSPACE.get("g", (2, xf.shape[1]) + gg.shape[:2], g.dtype)
                _forward_dft(_packed(gg), plan, gf)  # (2, F, B, O)
                if need_b:  # G_0 = sum_{h,w} g: grad_b without another pass over g
                    gbs.append(gf[0, 0].sum(0))
                if need_x:  # GX_f = G_f conj(Wc_f)^T = G_f conj(Wc^T_f)
                    _inverse_dft(_mix(gf, wct, False, True), plan, gxg)
                if need_w:  # M_f^T = conj(G_f)^T X_f  (O, B) @ (B, C)
                    gws.append(_weight_grad(_mix(gf.transpose(2, 3), xf, True, False), k, plan))
        gw = torch.cat(gws) if need_w else None
        gb = (torch.cat(gbs) if gbs else g.sum((0, 2, 3))) if need_b else None
        return gx, gw, gb, None


def conv2d_same(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, w, b, padding=k // 2, groups=groups)`` (stride 1, odd k, NCHW, CPU float32/float64) by
    per-frequency GEMMs (module docstring); gradients for x, w and b as requested. Not twice differentiable.
    groups=N is the stacked layout of N networks (bnlab.nn.layers); each group runs on its own.

    Args:
        x: input (B, C, H, W).
        w: weights (O, C / groups, k, k), k odd.
        b: bias (O,) or None.
        groups: channel groups; C and O divisible by it.
    Returns:
        y (B, O, H, W), contiguous.

    >>> x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 5, 5)
    >>> bool(torch.allclose(conv2d_same(x, w), torch.nn.functional.conv2d(x, w, padding=2), atol=1e-4))
    True
    """
    if x.dim() != 4 or w.dim() != 4 or w.shape[-1] != w.shape[-2] or w.shape[-1] % 2 == 0:
        raise ValueError(f"conv2d_same needs x (B, C, H, W) and w (O, C, k, k) with k odd, got {tuple(w.shape)}")
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups or w.shape[1] * groups != x.shape[1]:
        raise ValueError(
            f"w {tuple(w.shape)} does not fit x's {x.shape[1]} channels in {groups} group(s): "
            "w must be (O, C / groups, k, k) with C and O divisible by groups"
        )
    if x.dtype not in (torch.float32, torch.float64) or w.dtype != x.dtype or x.device.type != "cpu":
        raise ValueError(f"conv2d_same runs on CPU float32/float64 tensors, got {x.dtype} on {x.device}")
    return _ConvSame.apply(x, w, b, groups)


# Rates (GFLOP/s on one core: direct convolution, mixing GEMMs, DFT GEMMs) fitted to benchmarks/conv_fft.py on
# the 2-core dev machine under load. float32: direct convolution runs near the core's peak (oneDNN); the mixing
# GEMMs (K = C) and the memory-bound DFT GEMMs (K <= 2N, streaming 4-7 MB tensors) run slower inside the full
# pass than alone. The fit is within 20% of the measured speedups of the five multi-channel shapes there (it
# overrates C_in = 1); the rule asks for 1.4x predicted, clear of the 3x3 break-even. float64: F.conv2d has no
# fast path (~30 GFLOP/s).
_RATES = {torch.float32: (200.0, 100.0, 55.0), torch.float64: (32.0, 65.0, 30.0)}
_MARGIN = 1.4


def predicted_speedup(c_in: int, c_out: int, h: int, w: int, k: int, dtype: torch.dtype = torch.float32) -> float:
    """Modelled time of F.conv2d over conv2d_same for forward + backward (grad_x and grad_w), per example:

        direct = 3 * 2 C O k^2 H W / rate_direct
        dft    = 3 * 8 C O F / rate_mix + 2 (C + O) * 2 (2 H W K_w + 4 N_h H K_w) / rate_dft

    (three mixing products of 4 real GEMMs each; a forward and an inverse transform of every input and output
    plane, each a W-step and an H-step GEMM), with ``N_h = H + k//2``, ``K_w = (W + k//2)//2 + 1``,
    ``F = N_h K_w``."""
    rate_direct, rate_mix, rate_dft = _RATES[dtype]
    p = k // 2
    nh, kw = h + p, (w + p) // 2 + 1
    direct = 3 * 2 * c_in * c_out * k * k * h * w / rate_direct
    plane = 2 * (2 * h * w * kw + 4 * nh * h * kw)
    dft = 3 * 8 * c_in * c_out * nh * kw / rate_mix + 2 * (c_in + c_out) * plane / rate_dft
    return direct / dft


def fft_pays(c_in: int, c_out: int, h: int, w: int, k: int, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`conv2d_same` should replace ``F.conv2d`` on the CPU for a layer of this shape: its
    :func:`predicted_speedup` is at least 1.4. float32: True for M1's 5x5 conv2 (MNIST 32->64 on 14x14, CIFAR
    64->64 on 16x16), False for conv1 (C_in = 1: the transforms dominate) and for M3's 3x3 conv2 (break-even
    measured), where the caller keeps F.conv2d. float64: True for all of these but conv1."""
    return predicted_speedup(c_in, c_out, h, w, k, dtype) >= _MARGIN
