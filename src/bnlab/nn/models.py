"""The SPEC's models M1-M5, with or without BN, as batched networks and as plain torch.nn references.

One architecture list drives both builders, so ``BatchedNet.from_modules`` / ``to_modules`` map parameters
layer by layer. With BN, every conv and dense layer (logits included) is followed by BN, before the ReLU.
- M1: conv5x5(32)-pool-conv5x5(64)-pool-fc1024-fc; on 3-channel input (CIFAR-10) conv5x5(64) twice, fc512, fc128.
  The authors' stored BN CNN feeds bn1 into the second block twice, so its second conv never reaches the loss;
  we do not copy that defect: each block reads the previous block's output.
- M2: one dense layer in->classes (cross-entropy); M4: the same with squared loss on the softmax output.
- M3: conv3x3(32)-pool-conv3x3(64)-pool-fc512-fc128-fc.
- M5: in->h->classes with ReLU (h = ``hidden``).
Convolutions use 'same' padding and 2x2 max pooling. MLPs flatten any input; CNNs need image inputs (C, H, W) and
reject feature vectors (e.g. MNIST-1D) with a ``BnlabError`` [ours].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import skip_init

from bnlab.errors import BnlabError
from bnlab.nn.fused import bn_relu_pool, fusable, relu_pool
from bnlab.nn.inputblock import conv_bn_relu_pool, input_block_pays
from bnlab.nn.layers import (
    BatchedBatchNorm,
    BatchedConv2d,
    BatchedFlatten,
    BatchedLinear,
    BatchedMaxPool2d,
    BatchedReLU,
    torch_default_init_,
)

KINDS = ("M1", "M2", "M3", "M4", "M5")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture shared by every network of one batched run; ``loss`` follows the kind (M4: squared)."""

    kind: str = "M5"
    bn: bool = True
    hidden: int = 100

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BnlabError(f"unknown model kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.hidden < 1:
            raise BnlabError(f"hidden width must be positive, got {self.hidden}")

    @property
    def loss(self) -> str:
        return "squared" if self.kind == "M4" else "cross_entropy"


def architecture(spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> list[tuple]:
    """Ops as tuples: ("flatten",), ("linear", in, out), ("conv", c_in, c_out, k), ("bn", c), ("relu",), ("pool",)."""
    input_shape = tuple(input_shape)
    ops: list[tuple] = []

    def dense(d_in: int, widths: Sequence[int]) -> None:
        for i, w in enumerate(widths):
            ops.append(("linear", d_in, w))
            if spec.bn:
                ops.append(("bn", w))
            if i < len(widths) - 1:
                ops.append(("relu",))
            d_in = w

    if spec.kind in ("M2", "M4", "M5"):
        ops.append(("flatten",))
        d = 1
        for s in input_shape:
            d *= s
        dense(d, [num_classes] if spec.kind != "M5" else [spec.hidden, num_classes])
        return ops
    if len(input_shape) != 3:
        raise BnlabError(f"{spec.kind} is a CNN and needs image inputs (C, H, W), got shape {input_shape}")
    c, h, w = input_shape
    if h < 4 or w < 4:
        raise BnlabError(f"{spec.kind} pools twice and needs images of at least 4x4, got {h}x{w}")
    if spec.kind == "M1":
        convs, k, fcs = ([64, 64], 5, [512, 128]) if c == 3 else ([32, 64], 5, [1024])
    else:
        convs, k, fcs = [32, 64], 3, [512, 128]
    for c_out in convs:
        ops.append(("conv", c, c_out, k))
        if spec.bn:
            ops.append(("bn", c_out))
        ops += [("relu",), ("pool",)]
        c, h, w = c_out, h // 2, w // 2
    ops.append(("flatten",))
    dense(c * h * w, [*fcs, num_classes])
    return ops


def reference_module(
    spec: ModelSpec,
    input_shape: Sequence[int],
    num_classes: int,
    seed: int = 0,
    weight_scale: float = 1.0,
    gamma_init: float = 1.0,
) -> nn.Sequential:
    """One torch.nn network, initialised from ``seed`` as :func:`init_network_` says."""
    ops = architecture(spec, input_shape, num_classes)
    layers: list[nn.Module] = []
    spatial = False  # BN after a conv normalises per channel over (B, H, W): BatchNorm2d; after flatten, 1d
    for op in ops:
        if op[0] == "linear":
            layer = skip_init(nn.Linear, op[1], op[2])  # no default draw: ours follows (a third of init's time)
        elif op[0] == "conv":
            layer = skip_init(nn.Conv2d, op[1], op[2], op[3], padding=op[3] // 2)
        elif op[0] == "bn":
            layer = nn.BatchNorm2d(op[1]) if spatial else nn.BatchNorm1d(op[1])
        elif op[0] == "relu":
            layer = nn.ReLU()
        elif op[0] == "pool":
            layer = nn.MaxPool2d(2)
        else:
            layer = nn.Flatten()
        spatial = op[0] != "flatten" and (spatial or op[0] == "conv")
        layers.append(layer)
    init_network_(ops, [_weight_bias(layer) for layer in layers], seed, weight_scale, gamma_init)
    return nn.Sequential(*layers)


def _weight_bias(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    return (layer.weight, layer.bias) if getattr(layer, "weight", None) is not None else None


@torch.no_grad()
def init_network_(
    ops: Sequence[tuple], params: Sequence, seed: int, weight_scale: float = 1.0, gamma_init: float = 1.0
) -> None:
    """Initialise one network in place: ``params[i]`` is op i's (weight, bias) or None. torch's default
    U(+-1/sqrt(fan_in)) for conv and dense weights and biases, drawn in float32 from one generator seeded with
    ``seed``, layer by layer (weight, then bias), weights then multiplied by ``weight_scale``; BN gamma =
    ``gamma_init`` (beta stays 0). The one rule behind both the torch.nn references and the batched nets."""
    gen = torch.Generator().manual_seed(int(seed))
    for op, wb in zip(ops, params, strict=True):
        if op[0] in ("linear", "conv"):
            fan_in = op[1] * (op[3] * op[3] if op[0] == "conv" else 1)
            torch_default_init_(wb[0], wb[1], fan_in, gen)
            wb[0].mul_(weight_scale)
        elif op[0] == "bn":
            wb[0].fill_(gamma_init)


class BatchedNet(nn.Module):
    """N networks of one architecture; ``forward(x)`` maps a shared batch (B, *input_shape) to logits (B, N, K)."""

    def __init__(
        self,
        spec,
        input_shape: Sequence[int] | None,
        num_classes: int | None,
        n: int,
        layers: Sequence[nn.Module] | None = None,
    ):
        """``layers``: ready batched layers (``bnlab.nn.convert.ModuleNet`` passes them) instead of the
        architecture of a ``ModelSpec``; ``input_shape`` None skips the input check."""
        super().__init__()
        if n < 1:
            raise BnlabError(f"need at least one network, got {n}")
        shape = tuple(input_shape) if input_shape is not None else None
        self.spec, self.input_shape, self.num_classes, self.n = spec, shape, num_classes, n
        self.tails: dict[int, int] = {}
        # CPU kernels (the fused first block, fused conv-block tails, DFT convolutions, the dense head's conv-layout
        # gradient) where they pay; False runs torch's own op for every layer: twice differentiable (nn.sharpness
        # needs that) and the reference the kernels are tested against
        self.fast_cpu = True
        if layers is not None:
            self.ops = None
            self.layers = nn.ModuleList(layers)
            return
        self.ops = architecture(spec, input_shape, num_classes)
        built: list[nn.Module] = []
        for i, op in enumerate(self.ops):
            if op[0] == "linear":
                built.append(BatchedLinear(n, op[1], op[2]))
            elif op[0] == "conv":
                built.append(BatchedConv2d(n, op[1], op[2], op[3]))
            elif op[0] == "bn":
                built.append(BatchedBatchNorm(n, op[1]))
            elif op[0] == "relu":
                built.append(BatchedReLU())
            elif op[0] == "pool":
                built.append(BatchedMaxPool2d())
            else:
                built.append(BatchedFlatten(n, shared=i == 0))
        self.layers = nn.ModuleList(built)
        # conv blocks' tails, (BN,) ReLU, pool, each run as one fused CPU pass (bnlab.nn.fused): start -> length
        for i, op in enumerate(self.ops):
            if op[0] == "bn" and self.ops[i + 1 : i + 3] == [("relu",), ("pool",)]:
                self.tails[i] = 3
            elif op[0] == "relu" and self.ops[i + 1 : i + 2] == [("pool",)]:
                self.tails[i] = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise BnlabError(f"input shape {tuple(x.shape[1:])} does not match the model's {self.input_shape}")
        i = 0
        while i < len(self.layers):
            cpu = self.fast_cpu and x.device.type == "cpu"
            fast = cpu and fusable(x)
            span = self.tails.get(i, 0) if fast else 0
            if fast and i == 0 and self._input_block_pays(x):
                x = self._input_block(x)
                i = 1 + self.tails[1]
                continue
            if span == 3:
                bn = self.layers[i]
                x = bn_relu_pool(
                    x, bn.weight.view(-1), bn.bias.view(-1), bn.running_mean.view(-1), bn.running_var.view(-1),
                    self.training, bn.momentum, bn.eps,
                )  # fmt: skip
            elif span == 2:
                x = relu_pool(x)
            elif (fast and isinstance(self.layers[i], BatchedConv2d)) or (
                cpu and isinstance(self.layers[i], BatchedLinear)
            ):
                x = self.layers[i](x, fast_cpu=True)  # DFT convolution where it pays; the dense head's conv layout
            else:
                x = self.layers[i](x)
            i += span or 1
        return x.permute(2, 0, 1) if x.dim() == 3 else x  # dense logits (N, K, B) -> the (B, N, K) view

    def _input_block_pays(self, x: torch.Tensor) -> bool:
        conv = self.layers[0]
        return isinstance(conv, BatchedConv2d) and 1 in self.tails and input_block_pays(x, conv.c_in, conv.k)

    def _input_block(self, x: torch.Tensor) -> torch.Tensor:
        """The first conv on the shared input and its tail, (BN,) ReLU, pool, as one pass (bnlab.nn.inputblock)."""
        conv = self.layers[0]
        w, b = conv.weight.reshape(-1, conv.c_in, conv.k, conv.k), conv.bias.reshape(-1)
        if self.tails[1] == 2:
            return conv_bn_relu_pool(x, w, b)
        bn = self.layers[1]
        return conv_bn_relu_pool(
            x, w, b, bn.weight.view(-1), bn.bias.view(-1), bn.running_mean.view(-1), bn.running_var.view(-1),
            self.training, bn.momentum, bn.eps,
        )  # fmt: skip

    def bn_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.layers if isinstance(m, BatchedBatchNorm) for p in (m.weight, m.bias)]

    def other_parameters(self) -> list[nn.Parameter]:
        bn = {id(p) for p in self.bn_parameters()}
        return [p for p in self.parameters() if id(p) not in bn]

    @classmethod
    def from_modules(
        cls, spec: ModelSpec, input_shape: Sequence[int], num_classes: int, modules: Sequence[nn.Sequential]
    ) -> BatchedNet:
        """Stack N reference networks (as built by ``reference_module``) into one batched net, same dtype/device."""
        ref = modules[0]
        net = cls(spec, input_shape, num_classes, len(modules))
        p0 = next(ref.parameters())
        net.to(device=p0.device, dtype=p0.dtype)
        for i, layer in enumerate(net.layers):
            names = [n for n, _ in layer.named_parameters()] + [n for n, _ in layer.named_buffers()]
            for name in names:
                try:
                    stacked = torch.stack([getattr(m[i], name).detach() for m in modules])
                except (AttributeError, IndexError, RuntimeError) as exc:
                    raise BnlabError(f"reference modules do not match {spec.kind} at layer {i}: {exc}") from None
                getattr(layer, name).data.copy_(stacked.reshape(getattr(layer, name).shape))
        return net

    def _sibling(self, n: int) -> BatchedNet:
        """A new net of this architecture for ``n`` networks (fresh tensors), in this net's mode and CPU setting."""
        sub = type(self)(self.spec, self.input_shape, self.num_classes, n)
        sub.train(self.training)
        sub.fast_cpu = self.fast_cpu
        return sub

    def select(self, index: torch.Tensor) -> BatchedNet:
        """A new batched net holding copies of networks ``index`` (parameters and BN statistics), in that order."""
        sub = self._sibling(len(index))
        p0 = next(self.parameters())
        sub.to(device=p0.device, dtype=p0.dtype)
        with torch.no_grad():
            for mine, theirs in zip(self.state_dict().values(), sub.state_dict().values(), strict=True):
                theirs.copy_(mine.index_select(0, index))
        return sub

    def slice(self, start: int, stop: int) -> BatchedNet:
        """Networks ``start .. stop - 1`` as a batched net whose parameters and BN statistics are *views* of this
        net's: training it trains them here, with no copy in and nothing to write back."""
        sub = self._sibling(stop - start)
        for mine, theirs in zip(self.layers, sub.layers, strict=True):
            for name, p in mine.named_parameters(recurse=False):
                theirs._parameters[name] = nn.Parameter(p.data[start:stop], p.requires_grad)
            for name, b in mine.named_buffers(recurse=False):
                theirs._buffers[name] = b[start:stop]
        return sub

    def write_back(self, index: torch.Tensor, sub: BatchedNet) -> None:
        """Copy the networks of ``sub`` (as made by ``select(index)``) back into positions ``index``."""
        with torch.no_grad():
            for mine, theirs in zip(self.state_dict().values(), sub.state_dict().values(), strict=True):
                mine.index_copy_(0, index, theirs)

    @classmethod
    def from_module(cls, module, n: int, seeds: Sequence[int] | None = None, **options) -> BatchedNet:
        """N copies of a ``torch.nn.Sequential`` (or of what a zero-argument factory returns) as one batched net,
        copy k initialised from ``seeds[k]``; ``options``: ``input_shape``, ``loss``, ``dtype``, ``device``. See
        ``bnlab.nn.convert.from_module`` for the initialisation rule and the supported layers."""
        from bnlab.nn.convert import from_module  # the converter builds on this class

        return from_module(module, n, seeds, **options)

    def to_modules(self) -> list[nn.Sequential]:
        """Export each network as a torch.nn reference (parameters and BN running statistics copied)."""
        if not isinstance(self.spec, ModelSpec):
            raise BnlabError("to_modules exports the built-in models M1-M5; this net was built from layers")
        p0 = next(self.parameters())
        out = []
        for k in range(self.n):
            ref = reference_module(self.spec, self.input_shape, self.num_classes).to(p0.device, p0.dtype)
            for i, layer in enumerate(self.layers):
                for name, t in list(layer.named_parameters()) + list(layer.named_buffers()):
                    getattr(ref[i], name).data.copy_(t.detach()[k].reshape(getattr(ref[i], name).shape))
            out.append(ref)
        return out


def init_batched(
    spec: ModelSpec,
    input_shape: Sequence[int],
    num_classes: int,
    seeds: Sequence[int],
    weight_scales: Sequence[float] | None = None,
    gamma_inits: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> BatchedNet:
    """A batched net whose network k equals ``reference_module(spec, ..., seeds[k], weight_scales[k], ...)``.

    Each network's initial weights depend on its own seed only, not on its position or on N.
    """
    n = len(seeds)
    ws = list(weight_scales) if weight_scales is not None else [1.0] * n
    gs = list(gamma_inits) if gamma_inits is not None else [1.0] * n
    net = BatchedNet(spec, input_shape, num_classes, n)
    layers = [_weight_bias(layer) for layer in net.layers]
    # drawn straight into network k's slice of each stacked parameter (one float32 draw, no per-network modules
    # to stack: that copy was a third of the time of initialising 8 M1 networks)
    for k, (s, w, g) in enumerate(zip(seeds, ws, gs, strict=True)):
        init_network_(net.ops, [wb and (wb[0][k], wb[1][k]) for wb in layers], s, w, g)
    return net.to(device=device, dtype=dtype)
