"""Vectorised training of N networks (one per learning rate x seed x swept value) in one forward/backward pass.

Design [ours]:
- Every network of one call sees the same mini-batches, drawn from ``data_seed`` (epochs of seeded
  permutations, incomplete tail batches dropped), so only the swept values differ. A config's ``seed`` varies the
  initial weights only; to vary the batch order too, call ``train`` again with another ``data_seed``.
- Step t forwards batch t in training mode (BN on batch statistics), logs if t % log_every == 0, then updates.
  Row ``step = t`` therefore holds the train loss/accuracy of batch t *before* update t+1 (as TF's
  ``sess.run([loss, train_op])``) and the test metrics of the same parameters in eval mode (BN running stats).
  A last row at ``step = steps`` is measured on one more batch without updating anything.
- A network is diverged at the first step whose loss is non-finite or above ``max_loss``, or whose update is not
  finite; it is then frozen (parameters, BN statistics and Adam moments stop changing and stay finite) and its
  metrics are NaN from that step on; the other networks are unaffected (parameters are disjoint per network).
- Calls are independent and deterministic given (configs, data_seed, ...), so a caller may split a sweep into
  chunks of configs and cache each chunk's frames.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from bnlab.errors import BnlabError
from bnlab.nn.data import Dataset
from bnlab.nn.models import BatchedNet, ModelSpec, init_batched
from bnlab.nn.optim import BatchedOptimizer

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class NetConfig:
    """Hyperparameters of one network; ``bn_lr=None`` means the BN parameters use ``lr`` too."""

    lr: float
    bn_lr: float | None = None
    seed: int = 0
    weight_scale: float = 1.0
    gamma_init: float = 1.0
    optimizer: str = "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("lr", "bn_lr", "weight_scale", "gamma_init", "adam_eps"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise BnlabError(f"{name} must be finite and non-negative, got {v}")
        if self.optimizer not in OPTIMIZERS:
            raise BnlabError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise BnlabError(f"Adam betas must lie in [0, 1), got {self.beta1}, {self.beta2}")


@dataclass
class TrainResult:
    """``history``: one row per network and logged step (net, step, train_loss, train_acc, test_loss, test_acc,
    diverged); ``networks``: one row per network (its config, diverged, diverged_step, final metrics)."""

    history: pd.DataFrame
    networks: pd.DataFrame
    model: BatchedNet


def batch_schedule(n_train: int, batch_size: int, n_batches: int, data_seed: int) -> torch.Tensor:
    """Indices (n_batches, batch_size): consecutive batches of seeded permutations, one permutation per epoch."""
    if not 1 <= batch_size <= n_train:
        raise BnlabError(f"batch size must lie in [1, {n_train}] (training set size), got {batch_size}")
    gen = torch.Generator().manual_seed(int(data_seed))
    per_epoch = n_train // batch_size
    epochs = -(-n_batches // per_epoch)
    perms = [torch.randperm(n_train, generator=gen)[: per_epoch * batch_size] for _ in range(epochs)]
    return torch.cat(perms).view(-1, batch_size)[:n_batches]


def network_losses(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss per network from logits (B, N, K): cross-entropy -log softmax(z)_y, or squared loss on the
    softmax output sum_k (softmax(z)_k - [y = k])^2 (M4) [ours: summed over classes, averaged over the batch],
    or ``half_squared`` regression on a scalar output (K = 1, real y): (z - y)^2 / 2, the OLS loss J.

    Computed on the (N, K, B) view, which is contiguous for a ``BatchedNet``'s logits: softmax over K along the
    contiguous B axis cost 0.03 ms for 40 networks x 10 classes x batch 100, over rows of K = 10 0.5 ms."""
    if loss == "half_squared":
        return 0.5 * (logits[..., 0] - y.view(-1, 1)).pow(2).mean(0)
    z = logits.permute(1, 2, 0)
    if loss == "cross_entropy":
        logp = torch.log_softmax(z, 1)
        return -logp.gather(1, y.view(1, 1, -1).expand(z.shape[0], 1, -1)).squeeze(1).mean(1)
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype).t()
    return (torch.softmax(z, 1) - onehot).pow(2).sum(1).mean(1)


def network_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.permute(1, 2, 0).argmax(1) == y).to(logits.dtype).mean(1)


@torch.no_grad()
def evaluate(model: BatchedNet, x: torch.Tensor, y: torch.Tensor, loss: str, chunk: int = 1000):
    """Eval-mode (running-statistics) mean loss and accuracy per network over (x, y), in chunks of ``chunk``."""
    was_training = model.training
    model.eval()
    tot_loss = torch.zeros(model.n, dtype=x.dtype, device=x.device)
    tot_acc = torch.zeros_like(tot_loss)
    for i in range(0, len(x), chunk):
        z = model(x[i : i + chunk])
        w = len(z)
        tot_loss += network_losses(z, y[i : i + chunk], loss) * w
        tot_acc += network_accuracy(z, y[i : i + chunk]) * w
    model.train(was_training)
    return tot_loss / len(x), tot_acc / len(x)


def _optimizer(model: BatchedNet, configs: Sequence[NetConfig]) -> BatchedOptimizer:
    p = next(model.parameters())

    def vec(values) -> torch.Tensor:
        return torch.tensor(values, dtype=p.dtype, device=p.device)

    lr = vec([c.lr for c in configs])
    bn_lr = vec([c.lr if c.bn_lr is None else c.bn_lr for c in configs])
    bn, other = model.bn_parameters(), model.other_parameters()
    return BatchedOptimizer(
        other + bn,
        [lr] * len(other) + [bn_lr] * len(bn),
        torch.tensor([c.optimizer == "adam" for c in configs], device=p.device),
        vec([c.beta1 for c in configs]),
        vec([c.beta2 for c in configs]),
        vec([c.adam_eps for c in configs]),
    )


GROUP_BYTES = 16 * 2**20  # on a CPU, most bytes one parameter tensor of a dense group may hold (see below)


def default_group_size(model: BatchedNet, device: torch.device) -> int:
    """Networks per forward/backward pass: all of them on a GPU; on a CPU, CNNs one at a time, dense nets as many
    as keep the group's largest parameter tensor within ``GROUP_BYTES``. Measured on a 2-core CPU, one thread
    (benchmarks/nn_sweep.py; CPU time, while other jobs ran): the stacked layout's grouped convolutions and
    (B, N*C, H, W) activations made an M1 step 2x slower per network than N plain convolutions, while stacked
    dense layers beat per-network ones (M5 h=100, 40 networks: 0.34 ms per network-step in one group of 12 MiB
    weights, 1.1 ms one network at a time). But a weight gradient past glibc's 32 MiB mmap ceiling is fresh
    pages every step: M5 h=1000 in one group (125 MiB) spent 20% of its time in page faults, 5.4 ms per
    network-step against 4.1-4.3 in groups of 2-5 (h=300: 1.43 in one group of 38 MiB, 1.1 in 10-20)."""
    if device.type != "cpu":
        return model.n
    if any(op[0] == "conv" for op in model.ops or ()):
        return 1
    largest = max((p[0].numel() * p.element_size() for p in model.parameters()), default=1)
    return max(1, min(model.n, GROUP_BYTES // largest))


@dataclass
class _Group:
    """Networks ``index`` of the full model, trained as one batched net ``net`` with its optimizer ``opt``;
    ``copied``: ``net`` holds copies of the full model's tensors (else it is the model or a slice of views)."""

    index: torch.Tensor
    net: BatchedNet
    opt: BatchedOptimizer
    copied: bool

    def __post_init__(self) -> None:
        self.buffers = list(self.net.buffers())  # BN running statistics, saved and restored around every step


class _Workset:
    """The live networks, split into groups of at most ``size`` that run one after another inside each step.

    A group of neighbouring networks is a ``BatchedNet.slice`` (views: it trains the full model in place); once
    networks in between are dropped, a group is a ``select`` copy. Diverged networks are frozen, so they are
    dropped: ``repack`` writes every copied group back into the full model (and Adam moments into full-size
    tensors) and regroups the networks still alive. Each network's arithmetic
    is independent of which others share its group, so regrouping changes no result beyond GEMM round-off.
    """

    def __init__(self, model: BatchedNet, configs: Sequence[NetConfig], size: int):
        self.model, self.configs = model, list(configs)
        self.size = size if model.ops is not None else model.n
        self.adam = any(c.optimizer == "adam" for c in self.configs)
        params = _optimizer(model, configs).params if self.adam else []
        self.moments = [torch.zeros_like(p) for p in params] + [torch.zeros_like(p) for p in params]
        self.groups: list[_Group] = []
        self.steps_done = 0
        self.repack(torch.arange(model.n, device=next(model.parameters()).device))

    def write_back(self) -> None:
        for g in self.groups:
            if g.copied:
                self.model.write_back(g.index, g.net)
            if g.opt.any_adam:  # a group of SGD networks only keeps no moments
                for full, part in zip(self.moments, g.opt.m + g.opt.v, strict=True):
                    full.index_copy_(0, g.index, part)

    def repack(self, alive: torch.Tensor) -> None:
        if self.groups and self.model.ops is None:
            return  # a net built from bare layers cannot be subset: dead networks stay frozen in its one group
        self.write_back()
        self.groups = []
        n_groups = -(-len(alive) // self.size)
        for index in alive.tensor_split(n_groups) if n_groups else []:
            start, stop = int(index[0]), int(index[-1]) + 1
            copied = stop - start != len(index)  # not one run of neighbours (networks dropped in between)
            if copied:
                net = self.model.select(index)
            else:
                net = self.model if stop - start == self.model.n else self.model.slice(start, stop)
            opt = _optimizer(net, [self.configs[i] for i in index.tolist()])
            opt.t = self.steps_done
            for mine, full in zip(opt.m + opt.v, self.moments if opt.any_adam else [], strict=True):
                mine.copy_(full.index_select(0, index))
            self.groups.append(_Group(index, net, opt, copied))


def train(
    spec: ModelSpec,
    dataset: Dataset,
    configs: Sequence[NetConfig],
    *,
    steps: int,
    batch_size: int = 100,
    log_every: int = 10,
    data_seed: int = 0,
    test_size: int | None = 1000,
    max_loss: float = 1e3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    model: BatchedNet | None = None,
    eval_chunk: int = 1000,
    group_size: int | None = None,
    on_log: Callable[[int, BatchedNet], None] | None = None,
) -> TrainResult:
    """Train ``len(configs)`` networks of architecture ``spec`` on ``dataset`` for ``steps`` updates, batched.

    ``test_size``: test metrics use the first ``test_size`` examples of a ``data_seed`` permutation of the test
    set (None: all of it). ``model``: start from this batched net (e.g. ``BatchedNet.from_modules``) instead of
    initialising from the configs' seeds; it is trained in place (pass ``model.spec`` as ``spec``: for a
    ``from_module`` net its ``ModuleSpec``, which names the loss). ``on_log(t, model)`` is called at every logged
    step, before update t+1, e.g. to measure the parameters; it must leave them and the BN statistics as it
    found them. ``group_size``: networks per batched pass (default ``default_group_size``); results do not
    depend on it beyond round-off.
    """
    configs = list(configs)
    if not configs:
        raise BnlabError("need at least one network config")
    if steps < 0 or log_every < 1:
        raise BnlabError(f"steps must be >= 0 and log_every >= 1, got {steps}, {log_every}")
    if group_size is not None and group_size < 1:
        raise BnlabError(f"group size must be positive, got {group_size}")
    if model is None:
        model = init_batched(
            spec,
            dataset.input_shape,
            dataset.num_classes,
            [c.seed for c in configs],
            [c.weight_scale for c in configs],
            [c.gamma_init for c in configs],
            device,
            dtype,
        )
    elif model.n != len(configs):
        raise BnlabError(f"model holds {model.n} networks but {len(configs)} configs were given")
    p0 = next(model.parameters())
    device, dtype = p0.device, p0.dtype
    data = dataset.to(device, dtype)
    schedule = batch_schedule(len(data.x_train), batch_size, steps + 1, data_seed).to(device)
    test_idx = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(int(data_seed)))
    test_idx = test_idx[:test_size].to(device)
    x_test, y_test = data.x_test[test_idx], data.y_test[test_idx]

    n = model.n
    model.train()
    work = _Workset(model, configs, group_size or default_group_size(model, device))
    alive = torch.ones(n, dtype=torch.bool, device=device)
    div_step = torch.full((n,), -1, dtype=torch.int64, device=device)
    nan = torch.full((n,), float("nan"), dtype=dtype, device=device)
    logs = []
    for t in range(steps + 1):
        final = t == steps
        log = t % log_every == 0 or final
        if log and on_log is not None:  # parameters after t updates, running statistics after t batches
            work.write_back()  # the full model must hold every group's current state
            on_log(t, model)
        idx = schedule[t]
        xb, yb = data.x_train[idx], data.y_train[idx]
        metrics = [nan.clone() for _ in range(4)]  # train loss, train acc, test loss, test acc; NaN if dropped
        ok = alive.clone()
        for g in work.groups:
            if log:  # parameters after t updates, running statistics after t batches
                for m, v in zip(metrics[2:], evaluate(g.net, x_test, y_test, spec.loss, eval_chunk), strict=True):
                    m[g.index] = v
            ok[g.index] = _group_step(
                g, xb, yb, spec.loss, alive[g.index], max_loss, final, metrics[:2] if log else None
            )
        if log:
            logs.append((t, *metrics))
        div_step = torch.where(alive & ~ok, t, div_step)
        work.steps_done = t + 1
        if not final and bool((alive & ~ok).any()):  # frozen from now on: stop computing them
            work.repack(ok.nonzero().flatten())
        alive = ok
    work.write_back()
    return _results(configs, logs, div_step.cpu(), model)


def _group_step(g: _Group, xb, yb, loss: str, alive, max_loss: float, final: bool, record) -> torch.Tensor:
    """Forward batch (xb, yb) through group ``g``, update it unless ``final``; return which networks are fine.

    ``record``: [train loss, train acc] full-size vectors to fill at the group's positions, or None.
    """
    buffers = g.buffers
    saved = [b.clone() for b in buffers]  # BN running stats: restored for networks that fail this step
    with torch.set_grad_enabled(not final):
        logits = g.net(xb)
        losses = network_losses(logits, yb, loss)
    ok = alive & torch.isfinite(losses) & (losses <= max_loss)
    if record is not None:
        record[0][g.index] = losses.detach()
        record[1][g.index] = network_accuracy(logits.detach(), yb)
    if not final:
        # Networks already frozen or failing now contribute zero loss; their (possibly NaN) gradients stay in
        # their own parameter blocks and are discarded by the optimizer's mask.
        total = torch.where(ok, losses, torch.zeros((), dtype=losses.dtype, device=losses.device)).sum()
        grads = list(torch.autograd.grad(total, g.opt.params))
        ok = g.opt.step(grads, ok)
    if not buffers or (not final and bool(ok.all())):
        return ok
    with torch.no_grad():
        for b, s in zip(buffers, saved, strict=True):  # the last row measures without changing anything
            b.copy_(s if final else torch.where(ok.view(-1, *([1] * (b.dim() - 1))), b, s))
    return ok


def _results(configs: list[NetConfig], logs: list, div_step: torch.Tensor, model: BatchedNet) -> TrainResult:
    n = len(configs)
    frames = []
    for t, *metrics in logs:
        diverged = (div_step >= 0) & (div_step <= t)
        row = {"net": range(n), "step": t}
        for name, m in zip(("train_loss", "train_acc", "test_loss", "test_acc"), metrics, strict=True):
            vals = m.detach().to("cpu", torch.float64)
            row[name] = torch.where(diverged, float("nan"), vals).numpy()
        row["diverged"] = diverged.numpy()
        frames.append(pd.DataFrame(row))
    history = pd.concat(frames, ignore_index=True)
    nets = pd.DataFrame([dataclasses.asdict(c) for c in configs])
    nets.insert(0, "net", range(n))
    nets["bn_lr"] = [c.lr if c.bn_lr is None else c.bn_lr for c in configs]
    nets["diverged"] = (div_step >= 0).numpy()
    nets["diverged_step"] = div_step.numpy()
    last = history[history.step == history.step.max()].set_index("net")
    for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
        nets[f"final_{name}"] = last[name].to_numpy()
    return TrainResult(history, nets, model)
