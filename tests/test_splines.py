"""Rational-quadratic spline: invertibility, log-determinants, tails, gradients, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vocoder.flows.splines import (
    identity_derivative_logit,
    rational_quadratic_spline,
    spline_param_count,
)

K = 8
B = 5.0


def _params(shape, scale=1.0, extreme=False, dtype=torch.float64, seed=0, num_bins=K):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, num_bins, generator=g, dtype=dtype)
    h = torch.randn(*shape, num_bins, generator=g, dtype=dtype)
    d = torch.randn(*shape, num_bins - 1, generator=g, dtype=dtype)
    if extreme:  # every logit at +-20: the narrowest bins, steepest and flattest slopes
        return w.sign() * 20, h.sign() * 20, d.sign() * 20
    return w * scale, h * scale, d * scale


def _knots(logits, bound=B, min_bin=1e-3):
    sizes = min_bin + (1 - min_bin * logits.shape[-1]) * torch.softmax(logits, -1)
    return F.pad(torch.cumsum(sizes, -1), (1, 0)) * 2 * bound - bound


def _probe_inputs(w, dtype, seed=1):
    """Random inputs in and out of [-B, B], plus +-B, knots and points in the last bin."""
    n = w.shape[0]
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 1.2 * B
    knots = _knots(w.double())
    special = [-B, B, -B - 1e-3, B + 1e-3, 1e3, -1e3, B - 1e-6]
    x[: len(special)] = torch.tensor(special, dtype=torch.float64)
    # Interior knots and points inside the last bin.
    x[10:20] = knots[10:20, 3]
    frac = torch.rand(10, generator=g, dtype=torch.float64)
    x[20:30] = knots[20:30, -2] + frac * (B - knots[20:30, -2])
    return x.to(dtype)


def _roundtrip(x, w, h, d):
    y, logdet = rational_quadratic_spline(x, w, h, d)
    x_back, inv_logdet = rational_quadratic_spline(y, w, h, d, inverse=True)
    return y, logdet, x_back, inv_logdet


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_inverse_of_forward_is_identity(dtype, tol):
    w, h, d = _params((400,), scale=0.5, dtype=dtype)
    x = _probe_inputs(w, dtype)
    y, logdet, x_back, inv_logdet = _roundtrip(x, w, h, d)
    assert y.dtype == logdet.dtype == x_back.dtype == dtype
    assert (x_back - x).abs().max() <= tol
    assert (logdet + inv_logdet).abs().max() <= 100 * tol


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("extreme", [False, True])
def test_inverse_is_backward_stable_for_extreme_parameters(dtype, tol, extreme):
    # Where the spline is nearly flat (slope down to ~1e-6 with +-20 logits), rounding y alone
    # moves the exact preimage far, so the error is measured where it is well-posed: in
    # output units, |x_back - x| * min(1, dy/dx).
    w, h, d = _params((2000,), scale=3.0, extreme=extreme, dtype=dtype, seed=2, num_bins=32)
    x = _probe_inputs(w, dtype, seed=3)
    y, logdet, x_back, _ = _roundtrip(x, w, h, d)
    slope = logdet.double().exp().clamp(max=1.0)
    assert ((x_back - x).double().abs() * slope).max() <= tol
    assert torch.isfinite(x_back).all()


def test_edges_and_last_bin():
    w, h, d = _params((3,), scale=2.0)
    x = torch.tensor([-B, B, B - 1e-9], dtype=torch.float64)
    y, logdet = rational_quadratic_spline(x, w, h, d)
    assert y[0] == -B and y[1] == B
    # Boundary derivatives are 1: the tails join smoothly.
    assert logdet[:2].abs().max() < 1e-12
    x_back, inv_logdet = rational_quadratic_spline(y, w, h, d, inverse=True)
    assert x_back[0] == -B and x_back[1] == B
    assert (x_back - x).abs().max() < 1e-12
    assert inv_logdet[:2].abs().max() < 1e-12


def test_float32_forward_is_accurate_next_to_a_steep_knot():
    # Two equal bins: the knots -5, 0, 5 are exact in every precision, so float32 can be
    # compared with float64 directly. The interior derivative is steep, and the probe points
    # approach the right knot, where 1 - theta computed from theta would lose precision.
    x = B - torch.logspace(-5, -1, 100)
    w, h = torch.zeros(100, 2), torch.zeros(100, 2)
    d = torch.full((100, 1), 1e3)
    exact = dict(min_bin_width=0.0, min_bin_height=0.0)
    y, logdet = rational_quadratic_spline(x, w, h, d, **exact)
    y64, logdet64 = rational_quadratic_spline(
        x.double(), w.double(), h.double(), d.double(), **exact
    )
    assert (y.double() - y64).abs().max() < 5e-6
    assert (logdet.double() - logdet64).abs().max() < 5e-6


@pytest.mark.parametrize("inverse", [False, True])
def test_logabsdet_matches_finite_differences_and_autograd(inverse):
    w, h, d = _params((300,), scale=1.0, seed=4)
    x = torch.rand(300, generator=torch.Generator().manual_seed(5), dtype=torch.float64) - 0.5
    x = x * 2.2 * B
    eps = 1e-6
    plus, _ = rational_quadratic_spline(x + eps, w, h, d, inverse=inverse)
    minus, _ = rational_quadratic_spline(x - eps, w, h, d, inverse=inverse)
    fd = (plus - minus) / (2 * eps)

    x = x.clone().requires_grad_(True)
    y, logdet = rational_quadratic_spline(x, w, h, d, inverse=inverse)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(logdet, fd.log(), atol=1e-5)
    assert torch.allclose(logdet, grad.log(), atol=1e-10)


def test_forward_and_inverse_logdets_cancel_at_mapped_point():
    w, h, d = _params((500,), scale=3.0, seed=6)
    x = torch.rand(500, generator=torch.Generator().manual_seed(7), dtype=torch.float64) - 0.5
    x = x * 2 * B
    y, logdet = rational_quadratic_spline(x, w, h, d)
    _, inv_logdet = rational_quadratic_spline(y, w, h, d, inverse=True)
    assert (logdet + inv_logdet).abs().max() < 1e-8


def test_monotonic_onto_interval_and_identity_tails():
    # One random spline, evaluated on a dense grid that runs past both tail bounds.
    w, h, d = _params((1,), scale=2.0, seed=8)
    grid = torch.linspace(-1.5 * B, 1.5 * B, 3001, dtype=torch.float64)
    y, logdet = rational_quadratic_spline(
        grid, w.expand(len(grid), -1), h.expand(len(grid), -1), d.expand(len(grid), -1)
    )
    assert (y.diff() > 0).all()
    inside = grid.abs() <= B
    assert y[inside].min() >= -B and y[inside].max() <= B
    assert torch.equal(y[~inside], grid[~inside])
    assert torch.equal(logdet[~inside], torch.zeros_like(logdet[~inside]))
    assert logdet[inside].abs().max() > 0.1  # the spline part is not trivially the identity


@pytest.mark.parametrize("inverse", [False, True])
def test_batch_entirely_outside_the_interval(inverse):
    x = torch.tensor([[-6.0, 7.0], [1e3, -1e6]], requires_grad=True)
    w, h, d = (t.float().requires_grad_(True) for t in _params((2, 2), scale=1.0))
    y, logdet = rational_quadratic_spline(x, w, h, d, inverse=inverse)
    assert torch.equal(y, x.detach()) and torch.equal(logdet, torch.zeros(2, 2))
    (y.sum() + logdet.sum()).backward()
    assert torch.equal(x.grad, torch.ones(2, 2))
    for p in (w, h, d):
        assert torch.equal(p.grad, torch.zeros_like(p))

    empty = torch.zeros(0, 4)
    out, ld = rational_quadratic_spline(
        empty, torch.zeros(0, 4, K), torch.zeros(0, 4, K), torch.zeros(0, 4, K - 1), inverse=inverse
    )
    assert out.shape == ld.shape == (0, 4)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("extreme", [False, True])
def test_gradients_finite_with_mixed_inputs(inverse, extreme):
    w, h, d = _params((40,), scale=2.0, extreme=extreme, dtype=torch.float32, seed=9)
    x = _probe_inputs(w, torch.float32, seed=10)
    x[30:] = torch.tensor([1e3, -1e3, B, -B, 0.0, 1e30, -B - 1e-7, B + 1e-7, 4.999, -4.999])
    leaves = [t.clone().requires_grad_(True) for t in (x, w, h, d)]
    y, logdet = rational_quadratic_spline(*leaves, inverse=inverse)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    (y.square().sum() + logdet.sum()).backward()
    for t in leaves:
        assert torch.isfinite(t.grad).all()


def test_identity_at_zero_logits():
    u = identity_derivative_logit(1e-3)
    assert math.isclose(1e-3 + F.softplus(torch.tensor(u, dtype=torch.float64)).item(), 1.0)
    x = torch.linspace(-1.2 * B, 1.2 * B, 241)
    shape = x.shape + (K,)
    w, h = torch.zeros(shape), torch.zeros(shape)
    d = torch.full(x.shape + (K - 1,), u)
    for inverse in (False, True):
        y, logdet = rational_quadratic_spline(x, w, h, d, inverse=inverse)
        assert torch.allclose(y, x, atol=1e-5)
        assert logdet.abs().max() < 1e-5
    # A plain zero derivative logit is not the identity: the offset matters.
    y, _ = rational_quadratic_spline(x, w, h, torch.zeros_like(d))
    assert (y - x).abs().max() > 1e-2


def test_param_count_and_shape_checks():
    assert spline_param_count(32) == 95
    x = torch.zeros(2, 3)
    w, h, d = _params((2, 3), dtype=torch.float32)
    assert rational_quadratic_spline(x, w, h, d)[0].shape == (2, 3)
    with pytest.raises(ValueError):
        rational_quadratic_spline(x, w, h, w)
    with pytest.raises(ValueError):
        rational_quadratic_spline(x, w, h, d, min_bin_width=1 / K)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_compute_in_float32(dtype):
    w, h, d = _params((200,), scale=0.5, dtype=torch.float32, seed=11)
    x = _probe_inputs(w, torch.float32, seed=12)
    x = x.clamp(-1e3, 1e3).to(dtype)
    y, logdet = rational_quadratic_spline(x, w.to(dtype), h.to(dtype), d.to(dtype))
    assert y.dtype == logdet.dtype == dtype
    ref, ref_logdet = rational_quadratic_spline(
        x.float(), w.to(dtype).float(), h.to(dtype).float(), d.to(dtype).float()
    )
    # Only the final cast rounds: the result is the float32 one, rounded once.
    assert torch.equal(y, ref.to(dtype)) and torch.equal(logdet, ref_logdet.to(dtype))


def test_autocast_does_not_lower_precision():
    w, h, d = _params((100,), scale=0.5, dtype=torch.float32, seed=13)
    x = _probe_inputs(w, torch.float32, seed=14)
    ref = rational_quadratic_spline(x, w, h, d, inverse=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rational_quadratic_spline(x, w, h, d, inverse=True)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def _check_invertibility(device, dtype):
    w, h, d = _params((4, 16, 100), scale=0.3, dtype=torch.float32, seed=15, num_bins=32)
    g = torch.Generator().manual_seed(16)
    x = ((torch.rand(4, 16, 100, generator=g) * 2 - 1) * 1.2 * B).to(dtype)
    x[0, 0, :4] = torch.tensor([B, -B, 1e3, -1e3], dtype=dtype)
    x, w, h, d = (t.to(device) for t in (x, w, h, d))
    w, h, d = (t.requires_grad_(True) for t in (w, h, d))
    y, logdet = rational_quadratic_spline(x, w, h, d)
    x_back, inv_logdet = rational_quadratic_spline(y, w, h, d, inverse=True)
    assert y.dtype == x_back.dtype == logdet.dtype == dtype and y.device == x.device
    if dtype == torch.float32:
        assert (x_back - x).abs().max() <= 1e-5
    else:
        # bf16 keeps 8 bits: y is rounded on the way out, so measure the round trip in output
        # units and allow for the rounding of y and of x_back.
        slope = logdet.float().exp().clamp(max=1.0)
        assert ((x_back.float() - x.float()).abs() * slope).max() <= 0.05
    (x_back.float().square().sum() + logdet.float().sum() + inv_logdet.float().sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (w, h, d))
    return y.detach().cpu().float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_invertibility_batched_cpu(dtype):
    _check_invertibility("cpu", dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_invertibility(dtype):
    y_cuda = _check_invertibility("cuda", dtype)
    y_cpu = _check_invertibility("cpu", dtype)
    # One rounding step of the output dtype at most.
    atol = 1e-5 if dtype == torch.float32 else 0.04
    assert torch.allclose(y_cuda, y_cpu, atol=atol)
