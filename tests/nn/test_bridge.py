"""The bridge: a one-layer linear network with BN on its output, trained by the batched network trainer, follows
BNGD on the empirical moments of its data step for step, so the network half and the least-squares half of bnlab
compute one theory.

Why the rates map one to one: with full-batch BN (biased variance, eps = 1e-30: torch refuses 0, and 1e-30 is
below round-off of var), centred targets and beta = 0, the network's output on example i is a N_i with
N_i = (x_i - mean x)^T w / ||w||_H, H = Xc^T Xc / n; its loss, the mean of (y_i - a N_i)^2 / 2, is exactly
J(a, w) = (c - 2 a w^T g / ||w||_H + a^2) / 2 with g = Xc^T yc / n, c = yc^T yc / n. So SGD with rate lr on the
weights and bn_lr on gamma is BNGD with eps = lr and eps_a = bn_lr. beta stays 0: its gradient is
-(mean y - a mean N - beta) = 0 for centred y.
"""

import numpy as np
import torch
from torch import nn

from bnlab.nn import BatchedNet, Dataset, NetConfig, train
from bnlab.ols import Problem, bngd

STEPS = 200


def test_bn_linear_network_follows_bngd_on_empirical_moments():
    rng = np.random.default_rng(0)
    n, d = 64, 5
    X = rng.standard_normal((n, d)) * np.geomspace(3.0, 0.3, d) + 0.7  # anisotropic, not centred: BN centres it
    y = X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)
    y = y - y.mean()
    eps = np.array([0.01, 0.3, 3.0, 30.0])
    eps_a = np.array([1.0, 0.5, 1.0, 0.1])
    a0, w0 = 0.7, rng.standard_normal(d)

    module = nn.Sequential(nn.Linear(d, 1, bias=False), nn.BatchNorm1d(1, eps=1e-30)).double()
    with torch.no_grad():
        module[0].weight.copy_(torch.from_numpy(w0)[None])
        module[1].weight.fill_(a0)
    net = BatchedNet.from_module(module, len(eps), loss="half_squared")  # no seeds: all start from (a0, w0)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    data = Dataset("bridge", xt, yt, xt, yt, 1)
    seen = []

    def record(t, model):
        seen.append((model.layers[0].weight.detach()[:, 0].clone(), model.layers[1].weight.detach()[:, 0].clone()))

    res = train(
        net.spec,
        data,
        [NetConfig(lr=float(e), bn_lr=float(ea)) for e, ea in zip(eps, eps_a, strict=True)],
        steps=STEPS,
        batch_size=n,
        log_every=1,
        model=net,
        on_log=record,
        dtype=torch.float64,
    )
    problem = Problem.from_data(X, y)
    traj = bngd(problem, eps, STEPS, eps_a=eps_a, w0=w0, a0=a0, compile=False)

    loss = res.history.pivot(index="step", columns="net", values="train_loss").to_numpy()
    w = torch.stack([s[0] for s in seen]).numpy()  # (steps + 1, N, d)
    a = torch.stack([s[1] for s in seen]).numpy()
    err_loss = np.max(np.abs(loss - problem.j_star - traj.excess_loss) / loss)
    err_a = np.max(np.abs(a - traj.a) / np.abs(traj.a))
    err_w = np.max(np.abs(np.linalg.norm(w, axis=2) - traj.w_norm) / traj.w_norm)
    err_final = np.max(np.abs(w[-1] - traj.w_final)) / np.max(np.abs(traj.w_final))
    print(f"bridge, {STEPS} steps: loss {err_loss:.1e}, a {err_a:.1e}, ||w|| {err_w:.1e}, final w {err_final:.1e}")
    assert max(err_loss, err_a, err_w, err_final) < 1e-8
    # Not a trivial agreement: the runs moved (a changed, ||w|| grew as F3 says) and converged.
    assert np.all(np.abs(traj.a[-1] - a0) > 0.05)
    assert np.all(traj.w_norm[-1] >= traj.w_norm[0])
    assert np.all(traj.excess_loss[-1, 1:] < 1e-2 * traj.excess_loss[0, 1:])  # eps = 0.01 is still on its way
    assert net.layers[1].bias.detach().abs().max() < 1e-12  # beta stayed 0


def test_sharpness_of_the_bn_linear_network_is_the_effective_hessian():
    """At the BN least-squares optimum, Hess_w J = (a^2 / ||w||_H^2) H* with H* = H - H u u^T H / u^T H u [derived],
    so lr lambda_top(P Hess_w J P) = eps_hat lambda*_max: the network's edge number is the OLS eps_hat / edge."""
    from bnlab.nn.sharpness import sphere_sharpness, weight_norms
    from bnlab.ols import theory

    rng = np.random.default_rng(1)
    n, d = 80, 4
    X = rng.standard_normal((n, d)) * np.array([2.0, 1.0, 0.7, 0.3])
    y = X @ rng.standard_normal(d)
    y = y - y.mean()
    problem = Problem.from_data(X, y)
    eps = np.array([0.1, 1.0, 10.0])
    traj = bngd(problem, eps, 3000, eps_a=1.0, w0=rng.standard_normal(d), a0=1.0, compile=False)
    assert traj.excess_loss[-1].max() < 1e-15  # at the optimum
    module = nn.Sequential(nn.Linear(d, 1, bias=False), nn.BatchNorm1d(1, eps=1e-30)).double()
    net = BatchedNet.from_module(module, len(eps))
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.from_numpy(traj.w_final)[:, None])
        net.layers[1].weight.copy_(torch.from_numpy(traj.a_final)[:, None])
    batch = [(torch.from_numpy(X), torch.from_numpy(y))]
    sharp = sphere_sharpness(net, batch, "half_squared", [0], iters=10)[0].numpy()
    edge_nn = eps / weight_norms(net, [0])[0].numpy() ** 2 * sharp
    edge_ols = traj.eff_step[-1] * theory.effective_extremes(problem)[0]
    print(f"lr lambda_top: network {edge_nn}, OLS eps_hat lambda*_max {edge_ols}")
    assert np.allclose(edge_nn, edge_ols, rtol=1e-6)
