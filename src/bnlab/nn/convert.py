"""Any ``torch.nn.Sequential`` as N batched copies (``BatchedNet.from_module``), and its BN-free twin (``without_bn``).

Layouts are those of ``bnlab.nn.layers``: the input batch is shared, dense activations are (N, F, B) and conv
activations (B, N*C, H, W) with network k owning channel block k. Each torch layer becomes:
- ``Linear`` -> ``BatchedLinear`` (without its bias when ``bias=False``);
- ``Conv2d`` -> ``BatchedConv2d`` for the built-in case (square kernel, stride 1, padding k//2, bias), otherwise
  ``_BatchedConv2dGeneral`` (any stride, padding, dilation, groups, bias; zero padding only);
- ``BatchNorm1d/2d`` (affine, with running statistics, numeric momentum) -> ``BatchedBatchNorm`` with the layer's
  eps and momentum;
- ``Flatten()`` -> the per-network flatten;
- elementwise and per-channel layers run unchanged on the stacked layout, because no network shares a feature or
  channel with another: the activations in ``ELEMENTWISE``, ``MaxPool2d``, ``AvgPool2d``, the adaptive pools,
  ``Dropout`` and ``Dropout2d`` (each network draws its own masks, so dropout runs match torch.nn copies in
  distribution, not draw for draw), ``Identity``.
While the batch is still shared (before the first Linear/Conv), BN and dropout need per-network copies of the
input: a ``_Replicate`` layer is inserted in front of them.

Initialisation per network (``seeds``): given a zero-argument *factory*, copy k is ``factory()`` called under
``torch.manual_seed(seeds[k])``, exactly as torch would build it, custom init included. Given a *module*, copy k
re-runs every layer's ``reset_parameters()`` in order under ``torch.manual_seed(seeds[k])``; that equals
``torch.manual_seed(seeds[k]); build the Sequential`` when its layers were built in order with torch's default
init. ``seeds=None`` copies the module's current parameters into every network. The global RNG state is restored.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.errors import BnlabError
from bnlab.nn.layers import BatchedBatchNorm, BatchedConv2d, BatchedFlatten, BatchedLinear
from bnlab.nn.models import BatchedNet

ELEMENTWISE = (
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Softplus,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Mish,
    nn.Identity,
)
CHANNELWISE = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
DROPOUT = (nn.Dropout, nn.Dropout2d)
SUPPORTED = "Linear, Conv2d, BatchNorm1d/2d, Flatten, MaxPool2d, AvgPool2d, adaptive pools, Dropout, Dropout2d, " + (
    ", ".join(c.__name__ for c in ELEMENTWISE)
)

ModuleSource = nn.Module | Callable[[], nn.Module]


class _BatchedConv2dGeneral(nn.Module):
    """Per-network ``Conv2d`` with any stride, padding, dilation and groups: one grouped convolution with
    ``N * groups`` groups (network k's channels are block k), or ``groups`` groups on the shared input."""

    def __init__(self, n: int, conv: nn.Conv2d, shared: bool):
        super().__init__()
        self.n, self.shared = n, shared
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = nn.Parameter(torch.empty(n, *conv.weight.shape))
        self.bias = nn.Parameter(torch.empty(n, conv.out_channels)) if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(-1, *self.weight.shape[2:])
        b = self.bias.reshape(-1) if self.bias is not None else None
        groups = self.groups if self.shared else self.n * self.groups
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, groups)


class _Dropout2d(nn.Dropout2d):
    """``Dropout2d`` on the stacked layouts: channel-wise on conv activations; on dense (N, F, B) ones, elementwise,
    as torch.nn treats a feature-vector batch (B, F) (deprecated there), rather than dropping whole networks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return F.dropout(x, self.p, self.training, self.inplace)
        return super().forward(x)


class _Replicate(nn.Module):
    """Shared input (B, F) or (B, C, H, W) -> one copy per network, (N, F, B) or (B, N*C, H, W); (B, C, L) ->
    (B, N*C, L, 1), so that 3-D activations always mean the dense layout (BN then normalises per channel over
    B and L, as ``BatchNorm1d`` does on (B, C, L))."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x.t().unsqueeze(0).expand(self.n, -1, -1)
        if x.dim() == 3:
            x = x.unsqueeze(-1)
        return x.repeat(1, self.n, *([1] * (x.dim() - 2)))


def flat_layers(module: nn.Module) -> list[nn.Module]:
    """The layers of a Sequential, nested Sequentials expanded in order."""
    if not isinstance(module, nn.Sequential):
        raise BnlabError(f"bnlab batches a torch.nn.Sequential, got {type(module).__name__}")
    out: list[nn.Module] = []
    for child in module:
        out.extend(flat_layers(child) if isinstance(child, nn.Sequential) else [child])
    return out


def _unsupported(i: int, layer: nn.Module, why: str = "") -> BnlabError:
    reason = f" ({why})" if why else ""
    return BnlabError(f"unsupported layer {i} {layer!r}{reason}; bnlab batches {SUPPORTED}")


def _builtin_conv(conv: nn.Conv2d) -> bool:
    k = conv.kernel_size
    return (
        k[0] == k[1]
        and conv.stride == (1, 1)
        and conv.padding in ((k[0] // 2, k[0] // 2), "same")
        and k[0] % 2 == 1
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.bias is not None
        and conv.padding_mode == "zeros"
    )


def batched_layers(layers: Sequence[nn.Module], n: int) -> tuple[list[nn.Module], list[int]]:
    """Batched counterparts of ``layers`` and, for each, the index of the torch layer it takes parameters from
    (-1 for an inserted ``_Replicate``). Raises ``BnlabError`` naming the first layer that cannot be batched."""
    out: list[nn.Module] = []
    source: list[int] = []
    layout = "shared"  # "shared" (input batch), "dense" (B, N, F) or "conv" (B, N*C, H, W)

    def add(layer: nn.Module, i: int) -> None:
        out.append(layer)
        source.append(i)

    def per_network() -> None:
        nonlocal layout
        if layout == "shared":
            add(_Replicate(n), -1)
            layout = "per-network"

    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            if layout == "conv":
                raise _unsupported(i, layer, "a Linear after a convolution needs a Flatten first")
            add(BatchedLinear(n, layer.in_features, layer.out_features, bias=layer.bias is not None), i)
            layout = "dense"
        elif isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                raise _unsupported(i, layer, f"padding_mode {layer.padding_mode!r}; only zero padding")
            if layout == "dense":
                raise _unsupported(i, layer, "a Conv2d needs image activations, not flattened features")
            if _builtin_conv(layer):
                add(BatchedConv2d(n, layer.in_channels, layer.out_channels, layer.kernel_size[0]), i)
            else:
                if layer.groups > 1:
                    per_network()
                add(_BatchedConv2dGeneral(n, layer, shared=layout == "shared"), i)
            layout = "conv"
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            if not (layer.affine and layer.track_running_stats and layer.momentum is not None):
                raise _unsupported(i, layer, "BN needs affine=True, running statistics and a numeric momentum")
            per_network()
            add(BatchedBatchNorm(n, layer.num_features, layer.eps, layer.momentum), i)
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise _unsupported(i, layer, "only Flatten(start_dim=1, end_dim=-1)")
            add(BatchedFlatten(n, shared=layout == "shared"), i)
            layout = "shared" if layout == "shared" else "dense"
        elif isinstance(layer, DROPOUT):
            per_network()  # so that every network draws its own mask
            add(_Dropout2d(layer.p, layer.inplace) if isinstance(layer, nn.Dropout2d) else copy.deepcopy(layer), i)
        elif isinstance(layer, ELEMENTWISE + CHANNELWISE):
            if isinstance(layer, CHANNELWISE) and layout == "dense":
                raise _unsupported(i, layer, "pooling needs image activations, not flattened features")
            add(copy.deepcopy(layer), i)
        else:
            raise _unsupported(i, layer)
        if layout == "per-network":  # replicated input of a rank only some layers reveal
            layout = "conv" if isinstance(layer, nn.BatchNorm2d | nn.Dropout2d) else layout
            layout = "dense" if isinstance(layer, nn.BatchNorm1d) else layout
    if layout == "shared":  # no layer made per-network copies: every network computes the same function
        add(_Replicate(n), -1)
    return out, source


def network_copies(source: ModuleSource, seeds: Sequence[int] | None, n: int) -> list[nn.Module]:
    """One torch.nn module per network, initialised as the module docstring says (distinct seeds built once)."""
    if seeds is None:
        base = source() if callable(source) and not isinstance(source, nn.Module) else source
        return [base] * n
    seeds = [int(s) for s in seeds]
    if len(seeds) != n:
        raise BnlabError(f"need one seed per network: {n} networks, {len(seeds)} seeds")
    built: dict[int, nn.Module] = {}
    for s in dict.fromkeys(seeds):
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
            torch.manual_seed(s)
            if isinstance(source, nn.Module):
                m = copy.deepcopy(source)
                for layer in flat_layers(m):
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
            else:
                m = source()
        built[s] = m
    return [built[s] for s in seeds]


def module_output_shape(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The per-example output shape of ``module`` on inputs of ``input_shape`` (checked on two zero examples)."""
    probe = copy.deepcopy(module).eval()
    p = next(iter(probe.parameters()), None)
    x = torch.zeros(2, *input_shape, dtype=p.dtype if p is not None else torch.float32)
    try:
        with torch.no_grad():
            return tuple(probe(x).shape[1:])
    except Exception as exc:  # noqa: BLE001 - any failure here is a model/data mismatch: report it in one line
        shape = tuple(input_shape)
        raise BnlabError(f"the model does not accept inputs of shape {shape}: {_first_line(exc)}") from None


def load_stacked(batched: Sequence[nn.Module], source: Sequence[int], copies: Sequence[Sequence[nn.Module]]) -> None:
    """Copy parameters and BN running statistics of torch copies ``copies[k]`` (flat layer lists) into network k
    of the batched layers, in their dtype and device."""
    with torch.no_grad():
        for layer, i in zip(batched, source, strict=True):
            if i < 0:
                continue
            tensors = dict(layer.named_parameters(recurse=False)) | dict(layer.named_buffers(recurse=False))
            for name, t in tensors.items():
                if t is None:
                    continue
                stacked = torch.stack([getattr(c[i], name).detach() for c in copies])
                t.copy_(stacked.reshape(t.shape))


def without_bn(module: nn.Module) -> nn.Sequential:
    """The BN-free twin of a Sequential: every BatchNorm layer removed, the other layers (and their weights)
    copied, and a bias restored on each Linear/Conv2d that fed a BN without one (initialised to zero [ours])."""
    layers = flat_layers(module)
    out: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            continue
        twin = copy.deepcopy(layer)
        feeds_bn = i + 1 < len(layers) and isinstance(layers[i + 1], nn.modules.batchnorm._BatchNorm)
        if feeds_bn and isinstance(twin, nn.Linear | nn.Conv2d) and twin.bias is None:
            w = twin.weight
            twin.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
        out.append(twin)
    return nn.Sequential(*out)


def has_bn(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


LOSSES = ("cross_entropy", "squared", "half_squared")


@dataclass(frozen=True, eq=False)
class ModuleSpec:
    """The architecture of a ``from_module`` net, as ``ModelSpec`` is of a built-in one: the torch layers (a
    template: their types and hyperparameters, not their weights) and the loss the trainer uses
    (``bnlab.nn.trainer.network_losses``)."""

    layers: tuple[nn.Module, ...]
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise BnlabError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")


class ModuleNet(BatchedNet):
    """A ``BatchedNet`` whose architecture is a ``ModuleSpec``: ``ModuleNet(spec, input_shape, num_classes, n)``
    builds N networks of it (parameters uninitialised until loaded), so code that rebuilds a net from its spec
    (e.g. to take a subset of its networks) works for both kinds."""

    def __init__(self, spec: ModuleSpec, input_shape, num_classes, n: int):
        if n < 1:
            raise BnlabError(f"need at least one network, got {n}")
        layers, self_source = batched_layers(spec.layers, n)
        super().__init__(spec, input_shape, num_classes, n, layers=layers)
        self.source = self_source  # torch layer index of each batched layer (-1: inserted)
        # The op list the built-in nets carry, by kind only: lets callers ask e.g. whether there are convolutions.
        self.ops = [(_op_kind(layer),) for layer in spec.layers]


def _op_kind(layer: nn.Module) -> str:
    kinds = {nn.Linear: "linear", nn.Conv2d: "conv", nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn", nn.Flatten: "flatten"}
    return next((k for t, k in kinds.items() if isinstance(layer, t)), type(layer).__name__.lower())


def from_module(
    source: ModuleSource,
    n: int,
    seeds: Sequence[int] | None = None,
    input_shape: Sequence[int] | None = None,
    *,
    loss: str = "cross_entropy",
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> ModuleNet:
    """``BatchedNet.from_module``: N copies of ``source`` (a Sequential or a factory returning one) as one batched
    net, trained with ``train(net.spec, ..., model=net)``. ``input_shape`` (per example), when given, is checked
    against the model, which must map an example to a vector of scores (then ``num_classes`` is its length).
    dtype/device default to the module's."""
    if n < 1:
        raise BnlabError(f"need at least one network, got {n}")
    copies = network_copies(source, seeds, n)
    first = copies[0]
    if not isinstance(first, nn.Module):
        raise BnlabError(f"the model factory must return a torch.nn.Sequential, got {type(first).__name__}")
    net = ModuleNet(ModuleSpec(tuple(copy.deepcopy(flat_layers(first))), loss), input_shape, None, n)
    if input_shape is not None:  # after the layer check above, which names an unsupported layer first
        out_shape = module_output_shape(first, input_shape)
        if len(out_shape) != 1:
            raise BnlabError(f"the model must map each example to a vector of scores, got output shape {out_shape}")
        net.num_classes = out_shape[0]
    p0 = next(iter(first.parameters()), None)
    dtype = dtype or (p0.dtype if p0 is not None else torch.float32)
    net.to(device=device or (p0.device if p0 is not None else "cpu"), dtype=dtype)
    load_stacked(net.layers, net.source, [flat_layers(c) for c in copies])
    return net


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_factory(spec: str) -> Callable[[], nn.Sequential]:
    """``"FILE.py:FUNCTION"`` -> a factory calling FUNCTION() (no arguments) and checking it returns a Sequential.

    The file is executed as a module of its own, not registered in ``sys.modules``."""
    file, sep, name = str(spec).rpartition(":")
    if not sep or not file or not name.isidentifier():
        raise BnlabError(f"a model is given as FILE.py:FUNCTION, got {spec!r}")
    path = Path(file)
    if not path.is_file():
        raise BnlabError(f"model file {file} not found")
    module_spec = importlib.util.spec_from_file_location(f"bnlab_user_model_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise BnlabError(f"cannot import {file}: not a Python file")
    user = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(user)
    except Exception as exc:  # noqa: BLE001 - whatever the user's file raises is reported in one line
        raise BnlabError(f"cannot import {file}: {_first_line(exc)}") from None
    fn = getattr(user, name, None)
    if not callable(fn):
        raise BnlabError(f"{file} has no function {name!r}")

    def factory() -> nn.Sequential:
        try:
            module = fn()
        except Exception as exc:  # noqa: BLE001
            raise BnlabError(f"{spec}() failed: {_first_line(exc)}") from None
        if not isinstance(module, nn.Sequential):
            raise BnlabError(f"{spec}() must return a torch.nn.Sequential, got {type(module).__name__}")
        return module

    factory.__name__ = name
    return factory
