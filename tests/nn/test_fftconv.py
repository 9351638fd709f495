"""conv2d_same (per-frequency GEMMs) against F.conv2d with padding k//2 and its autograd gradients."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.nn.fftconv import _Workspace, conv2d_same, fft_pays

# (B, C_in, C_out, H, W, k): M1's conv2 at a small batch, odd and non-square planes, k = 3, C_in = 1, 1x1 planes
SHAPES = [
    (4, 32, 64, 14, 14, 5),
    (3, 5, 7, 13, 9, 5),
    (2, 3, 4, 7, 11, 3),
    (5, 1, 8, 28, 28, 5),
    (2, 2, 3, 1, 1, 3),
    (2, 4, 2, 6, 5, 1),
]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).norm() / ref.norm()).item()


def _check(shape, dtype, bias=True, gen=None, groups=1):
    nb, ci, co, h, w, k = shape
    x = torch.randn(nb, ci, h, w, dtype=dtype, generator=gen, requires_grad=True)
    wt = torch.randn(co, ci // groups, k, k, dtype=dtype, generator=gen, requires_grad=True)
    b = torch.randn(co, dtype=dtype, generator=gen, requires_grad=True) if bias else None
    g = torch.randn(nb, co, h, w, dtype=dtype, generator=gen)
    inputs = [x, wt] + ([b] if bias else [])
    ref = F.conv2d(x, wt, b, padding=k // 2, groups=groups)
    got = conv2d_same(x, wt, b, groups=groups)
    assert got.shape == ref.shape and got.dtype == dtype and got.is_contiguous()
    assert _rel(got, ref) < TOL[dtype]
    for r, q in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(got, inputs, g), strict=True):
        assert q.shape == r.shape
        assert _rel(q, r) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_conv2d_and_its_gradients(shape, dtype):
    _check(shape, dtype, gen=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("shape", "groups"),
    [((2, 96, 192, 14, 14, 5), 3), ((3, 8, 12, 7, 9, 5), 4), ((2, 6, 4, 5, 5, 3), 2), ((2, 4, 4, 6, 6, 3), 4)],
)
def test_groups_match_grouped_conv2d(shape, groups, dtype):
    """groups=N is the stacked layout of N networks (M1's conv2 for 3 networks first); depthwise last."""
    _check(shape, dtype, gen=torch.Generator().manual_seed(4), groups=groups)


def test_without_bias():
    _check((3, 4, 5, 8, 6, 3), torch.float64, bias=False, gen=torch.Generator().manual_seed(1))


def test_only_requested_gradients_are_computed():
    """conv1's use: a shared input that needs no gradient; grad_x is None and grad_w still matches."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, 10, 10, dtype=torch.float64, generator=gen)
    w = torch.randn(6, 1, 5, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen)  # no grad either
    conv2d_same(x, w, b).square().sum().backward()
    ref_w = w.grad.clone()
    w.grad = None
    F.conv2d(x, w, b, padding=2).square().sum().backward()
    assert x.grad is None and b.grad is None
    assert _rel(ref_w, w.grad) < 1e-10


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(conv2d_same, (x, w, b))


@settings(max_examples=25, deadline=None)
@given(
    nb=st.integers(1, 3),
    ci=st.integers(1, 4),
    co=st.integers(1, 4),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.sampled_from([1, 3, 5, 7]),
    groups=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(nb, ci, co, h, w, k, groups, seed):
    shape = (nb, ci * groups, co * groups, h, w, k)
    _check(shape, torch.float64, gen=torch.Generator().manual_seed(seed), groups=groups)


def test_rejects_what_it_does_not_implement():
    x = torch.zeros(1, 2, 5, 5)
    with pytest.raises(ValueError, match="odd"):
        conv2d_same(x, torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        conv2d_same(x, torch.zeros(3, 1, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        conv2d_same(x, torch.zeros(3, 1, 3, 3), groups=2)  # O = 3 not divisible by 2
    with pytest.raises(ValueError, match="float"):
        conv2d_same(x.long(), torch.zeros(3, 2, 3, 3, dtype=torch.long))


def test_fft_pays_rule():
    """The fitted rule: M1's conv2 and its CIFAR variant pay, conv1 (C_in = 1) and M3's 3x3 do not (float32)."""
    assert fft_pays(32, 64, 14, 14, 5)
    assert fft_pays(64, 64, 16, 16, 5)
    assert not fft_pays(1, 32, 28, 28, 5)
    assert not fft_pays(32, 64, 14, 14, 3)
    assert fft_pays(32, 64, 14, 14, 3, torch.float64)  # F.conv2d has no fast float64 path


def test_interleaved_calls_share_the_workspace_safely():
    """The per-thread scratch buffers are reused across calls and grown by larger shapes: two convolutions of
    different shapes, both forwards before either backward, a larger one in between, still match F.conv2d."""
    gen = torch.Generator().manual_seed(5)
    shapes = [((3, 6, 4, 9, 9), 5, 2), ((2, 4, 8, 12, 10), 3, 1)]  # (x shape without C split), k, groups
    xs, ws, bs, outs, refs = [], [], [], [], []
    for (nb, ci, co, h, w), k, groups in shapes:
        x = torch.randn(nb, ci, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
        wt = torch.randn(co, ci // groups, k, k, dtype=torch.float64, generator=gen, requires_grad=True)
        b = torch.randn(co, dtype=torch.float64, generator=gen, requires_grad=True)
        xs, ws, bs = xs + [x], ws + [wt], bs + [b]
        outs.append(conv2d_same(x, wt, b, groups=groups))
        refs.append(F.conv2d(x, wt, b, padding=k // 2, groups=groups))
    big = torch.randn(4, 8, 20, 20, dtype=torch.float64, generator=gen)
    conv2d_same(big, torch.randn(8, 8, 5, 5, dtype=torch.float64, generator=gen)).sum()  # grows every buffer
    for x, wt, b, got, ref in reversed(list(zip(xs, ws, bs, outs, refs, strict=True))):
        assert _rel(got, ref) < 1e-10
        g = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
        for r, q in zip(torch.autograd.grad(ref, [x, wt, b], g), torch.autograd.grad(got, [x, wt, b], g), strict=True):
            assert _rel(q, r) < 1e-10


def test_bias_gradient_alone_and_with_groups():
    """grad_b comes from g's spectrum at frequency 0 when x's or w's gradient is computed, else from g itself."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 6, 7, 8, dtype=torch.float64, generator=gen)
    w = torch.randn(9, 2, 3, 3, dtype=torch.float64, generator=gen)
    b = torch.randn(9, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(3, 9, 7, 8, dtype=torch.float64, generator=gen)
    (only_b,) = torch.autograd.grad(conv2d_same(x, w, b, groups=3), [b], g)
    w.requires_grad_(True)
    _, with_w = torch.autograd.grad(conv2d_same(x, w, b, groups=3), [w, b], g)
    ref = g.sum((0, 2, 3))
    assert _rel(only_b, ref) < 1e-12 and _rel(with_w, ref) < 1e-10


def test_workspace_keeps_buffers_only_up_to_its_limit():
    """A request within the limit reuses (and grows) the role's buffer; one beyond it gets a tensor of its own
    and leaves the kept buffer as it was, so a large evaluation batch does not stay resident."""
    ws = _Workspace(limit=1000 * 8)
    a = ws.get("t", (10, 50), torch.float64)
    b = ws.get("t", (20, 10), torch.float64)
    assert b.data_ptr() == a.data_ptr() and b.shape == (20, 10)
    big = ws.get("t", (10, 101), torch.float64)
    assert big.shape == (10, 101) and big.data_ptr() != a.data_ptr()
    assert ws.bufs[("t", torch.float64)].numel() == 500
    grown = ws.get("t", (1000,), torch.float64)
    assert ws.bufs[("t", torch.float64)].numel() == 1000 and grown.data_ptr() != a.data_ptr()


def test_requests_beyond_the_workspace_limit_compute_the_same(monkeypatch):
    """With a limit of 0 bytes every scratch tensor is a fresh one (the path of large evaluation batches)."""
    from bnlab.nn import fftconv

    monkeypatch.setattr(fftconv._WORKSPACE, "limit", 0)
    _check((3, 6, 4, 9, 8, 5), torch.float64, gen=torch.Generator().manual_seed(7), groups=2)
