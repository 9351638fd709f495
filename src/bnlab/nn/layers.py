"""Batched layers: N independent networks stacked along a leading model axis, run in one pass.

Activation layouts [ours]: the first layer reads the *shared* input batch (B, *input_shape), since every network of
a sweep sees the same mini-batch; after it, dense activations are (B, N, F) and conv activations (B, N*C, H, W),
so network k owns the channel block [k*C, (k+1)*C). Consequences:
- the first dense layer is one GEMM, x @ [W_1; ...; W_N]^T, and the first conv one convolution with N*C_out
  filters; later convs are grouped convolutions (groups=N) and later dense layers batched matmuls (baddbmm);
- batch normalisation of network k, channel c is plain BN of channel k*C + c, so all N networks are one fused
  ``F.batch_norm`` call with per-network statistics.
Parameters keep torch.nn's per-network shapes behind the model axis: Linear (N, out, in), Conv2d
(N, out, in, k, k), BN (N, C). On the CPU a conv block's BN, ReLU and pooling run as one fused pass instead of
these layers (``bnlab.nn.fused``, called by ``BatchedNet.forward``); the layers here are its reference and the
path everywhere else (CUDA, second derivatives).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BatchedLinear(nn.Module):
    """y_k = x_k W_k^T + b_k for each network k; x is (B, in) when shared, else (B, N, in); y is (B, N, out)."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        self.n, self.d_in, self.d_out = n, d_in, d_out
        self.weight = nn.Parameter(torch.empty(n, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(n, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # shared input: one GEMM against all N weight matrices stacked row-wise
            return F.linear(x, self.weight.reshape(-1, self.d_in), self.bias.reshape(-1)).view(
                x.shape[0], self.n, self.d_out
            )
        # y_k^T = W_k x_k^T + b_k as one bmm with W untransposed, so that autograd's weight gradient
        # grad(y^T) x comes out contiguous (N, out, in): a transposed one made every later pass over it (the
        # update, the finiteness check) strided, the bulk of the step for wide layers (measured).
        y_t = torch.baddbmm(self.bias.unsqueeze(2), self.weight, x.permute(1, 2, 0))  # (N, out, B)
        return y_t.permute(2, 0, 1)


class BatchedConv2d(nn.Module):
    """Per-network 2-D convolution, 'same' padding k//2; input (B, C_in, H, W) shared or (B, N*C_in, H, W)."""

    def __init__(self, n: int, c_in: int, c_out: int, k: int):
        super().__init__()
        self.n, self.c_in, self.c_out, self.k = n, c_in, c_out, k
        self.weight = nn.Parameter(torch.empty(n, c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.empty(n, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(-1, self.c_in, self.k, self.k)
        groups = 1 if x.shape[1] == self.c_in else self.n  # n == 1 makes both readings the same computation
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
        flat = x.reshape(x.shape[0], -1, *x.shape[3:]) if x.dim() == 3 else x  # (B, N, F) -> (B, N*F)
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
    """(B, N*C, H, W) -> (B, N, C*H*W), the per-network torch.flatten; at the input, (B, ...) -> (B, prod)."""

    def __init__(self, n: int, shared: bool):
        super().__init__()
        self.n, self.shared = n, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return x.reshape(x.shape[0], -1)
        return x.reshape(x.shape[0], self.n, -1)


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
