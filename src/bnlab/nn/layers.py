"""Batched layers: N independent networks stacked along a leading model axis, run in one pass.

Activation layouts [ours]: the first layer reads the *shared* input batch (B, *input_shape), since every network of
a sweep sees the same mini-batch; after it, dense activations are feature-major (N, F, B) and conv activations
(B, N*C, H, W), so network k owns the channel block [k*C, (k+1)*C). Consequences:
- the first dense layer is one GEMM, [W_1; ...; W_N] x^T -> (N*F, B), and the first conv one convolution with
  N*C_out filters; later convs are grouped convolutions (groups=N) and later dense layers one batched matmul
  y_k = W_k x_k + b_k, baddbmm((N, out, in), (N, in, B)) -> (N, out, B);
- batch normalisation of network k, channel c is plain BN of channel k*C + c, so all N networks are one fused
  ``F.batch_norm`` call with per-network statistics: on (B, N*C, H, W), and on the (1, N*F, B) view of a dense
  activation (B read as BN's spatial axis);
- ``BatchedNet.forward`` returns the logits as the (B, N, K) view of the (N, K, B) result (not a copy).
Why feature-major: every dense product then has its result and the gradient autograd sends back contiguous,
(N*F, B) or (N, out, B), so ReLU, BN and the next layer's backward walk memory in order. With dense activations
(B, N, F) and y^T = W x^T by bmm on permuted views, the hidden gradient came back strided: for M5 (h=100, 40
networks, batch 100) ReLU's backward took 1.7 ms on it against 0.17 ms contiguous, BN of the logits needed a
copy, and log-softmax over rows of K = 10 took 0.5 ms against 0.03 ms along B (CPU time, one thread, measured
while other jobs ran). The M5 step went from 0.39 to 0.32 ms per network (h=1000, one group: 5.3 to 5.1), and
the M1 and M3 steps, of which only the dense heads changed, from 83 to 78 and 50 to 47 ms per network (4
networks; benchmarks/nn_sweep.py --clock cpu).
A conv -> dense flatten is the strided view (B, N*C, H, W) -> (N, C*H*W, B), read by the batched matmul as a
transposed operand without a copy; on the CPU its input gradient is computed straight into the conv layout
(``_FlatHead``), elsewhere autograd's (N, F, B) gradient reaches the conv block as a transposed view.
Parameters keep torch.nn's per-network shapes behind the model axis: Linear (N, out, in), Conv2d
(N, out, in, k, k), BN (N, C). On the CPU (``BatchedNet.fast_cpu``) the first conv block, conv to pool, runs as one
pass that never writes the conv's output (``bnlab.nn.inputblock``), a later block's BN, ReLU and pooling as one
fused pass instead of these layers (``bnlab.nn.fused``) and 5x5 convolutions with enough channels by DFT
(``bnlab.nn.fftconv``); torch's own ops here are their reference and the path everywhere else (CUDA, second
derivatives).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.nn.fftconv import conv2d_same, fft_pays


class BatchedLinear(nn.Module):
    """y_k = W_k x_k (+ b_k) for each network k, feature-major: x is (B, in) when shared, else (N, in, B); y is
    (N, out, B). ``bias=False``: no b (as ``nn.Linear(..., bias=False)``)."""

    def __init__(self, n: int, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        self.n, self.d_in, self.d_out = n, d_in, d_out
        self.weight = nn.Parameter(torch.empty(n, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(n, d_out)) if bias else None

    def forward(self, x: torch.Tensor, fast_cpu: bool = False) -> torch.Tensor:
        """``fast_cpu``: on a flattened conv activation, :class:`_FlatHead`'s input gradient in the conv layout."""
        if x.dim() == 2:  # shared input: one GEMM, all N weight matrices stacked row-wise times x^T
            w = self.weight.reshape(-1, self.d_in)
            y = torch.mm(w, x.t()) if self.bias is None else torch.addmm(self.bias.reshape(-1, 1), w, x.t())
            return y.view(self.n, self.d_out, x.shape[0])
        if fast_cpu and x.permute(2, 0, 1).is_contiguous():
            return flat_head(x, self.weight, self.bias)
        # W untransposed, so that autograd's weight gradient grad(y) x^T comes out contiguous (N, out, in): a
        # transposed one made every later pass over it (the update, the finiteness check) strided (measured).
        if self.bias is None:
            return torch.bmm(self.weight, x)
        return torch.baddbmm(self.bias.unsqueeze(2), self.weight, x)


class _FlatHead(torch.autograd.Function):
    """The dense layer after a conv block, y_k = W_k x_k + b_k with x given as the flattened conv activations
    (B, N, F), once differentiable. The default path's input gradient W_k^T g_k comes out (N, F, B), which the
    flatten's backward hands to the conv block transposed (B strided); here it is computed as g_k^T W_k (B, F),
    the product a plain nn.Linear computes, written (N, B, F): for one network exactly the conv layout. On M1 (one
    network, 2 threads) fc1's backward went from 5.0 to 4.0 ms and the fused tail's backward, which had received the
    transposed gradient, from 5.5 to 4.0 ms: the step from 33.6 to 30.5 ms (torch.profiler, measured)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.bmm(w, x.permute(1, 2, 0)) if b is None else torch.baddbmm(b.unsqueeze(2), w, x.permute(1, 2, 0))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = torch.bmm(g.transpose(1, 2), w).transpose(0, 1) if need_x else None
        gw = torch.bmm(g, x.transpose(0, 1)) if need_w else None
        return gx, gw, g.sum(2) if need_b else None


def flat_head(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """y_k = W_k x_k (+ b_k) -> (N, out, B) for x the (N, F, B) flatten view of conv activations (``x.permute(2, 0,
    1)`` contiguous), by :class:`_FlatHead`."""
    return _FlatHead.apply(x.permute(2, 0, 1), w, b)


class BatchedConv2d(nn.Module):
    """Per-network 2-D convolution, 'same' padding k//2; input (B, C_in, H, W) shared or (B, N*C_in, H, W)."""

    def __init__(self, n: int, c_in: int, c_out: int, k: int):
        super().__init__()
        self.n, self.c_in, self.c_out, self.k = n, c_in, c_out, k
        self.weight = nn.Parameter(torch.empty(n, c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.empty(n, c_out))

    def forward(self, x: torch.Tensor, fast_cpu: bool = False) -> torch.Tensor:
        """``fast_cpu``: where ``fftconv.fft_pays`` for this layer's shape (M1's 5x5 conv2), convolve by
        per-frequency GEMMs (``fftconv.conv2d_same``: the same convolution in fewer FLOPs, once differentiable)."""
        w = self.weight.reshape(-1, self.c_in, self.k, self.k)
        groups = 1 if x.shape[1] == self.c_in else self.n  # n == 1 makes both readings the same computation
        if fast_cpu and fft_pays(self.c_in, self.c_out, x.shape[2], x.shape[3], self.k, x.dtype):
            return conv2d_same(x, w, self.bias.reshape(-1), groups=groups)
        return F.conv2d(x, w, self.bias.reshape(-1), padding=self.k // 2, groups=groups)


class BatchedBatchNorm(nn.Module):
    """BN per network and channel: y = gamma (x - mean_B) / sqrt(var_B + eps) + beta, biased var_B in training.

    Running statistics follow torch: r <- (1 - m) r + m s with m = 0.1 (TF's decay 0.9) and the unbiased batch
    variance for r_var; evaluation normalises with the running statistics.
    """

    def __init__(self, n: int, c: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.n, self.c, self.eps, self.momentum = n, c, eps, momentum
        self.weight = nn.Parameter(torch.ones(n, c))
        self.bias = nn.Parameter(torch.zeros(n, c))
        self.register_buffer("running_mean", torch.zeros(n, c))
        self.register_buffer("running_var", torch.ones(n, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(1, -1, x.shape[2]) if x.dim() == 3 else x  # dense (N, F, B) -> (1, N*F, B): stats over B
        y = F.batch_norm(
            flat,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.reshape(-1),
            self.bias.reshape(-1),
            self.training,
            self.momentum,
            self.eps,
        )
        return y.view(x.shape)


class BatchedFlatten(nn.Module):
    """(B, N*C, H, W) -> (N, C*H*W, B), the per-network torch.flatten as a strided view (the next batched matmul
    reads it as a transposed operand); dense (N, F, B) passes through; at the input, (B, ...) -> (B, prod)."""

    def __init__(self, n: int, shared: bool):
        super().__init__()
        self.n, self.shared = n, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return x.reshape(x.shape[0], -1)
        if x.dim() == 3:
            return x
        return x.reshape(x.shape[0], self.n, -1).permute(1, 2, 0)


class BatchedMaxPool2d(nn.Module):
    """2x2 max pooling, stride 2; channels are independent, so the stacked layout needs nothing special."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 2)


class BatchedReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def torch_default_init_(weight: torch.Tensor, bias: torch.Tensor, fan_in: int, gen: torch.Generator) -> None:
    """torch.nn's default for Linear/Conv: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform a=sqrt 5)."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=gen)
        bias.uniform_(-bound, bound, generator=gen)
