"""Invertible pieces: squeeze, row permutations, invertible 1x1 conv, couplings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vocoder.flows.coupling import (
    AffineElementwise,
    ChannelCoupling,
    RowAutoregressiveCoupling,
    SplineElementwise,
    shift_down,
)
from vocoder.flows.invconv import InvertibleConv1x1
from vocoder.flows.permutations import permute_rows, row_orders
from vocoder.flows.squeeze import squeeze, unsqueeze


def test_squeeze_is_column_major_and_invertible():
    x = torch.arange(12.0).reshape(1, 12)
    s = squeeze(x, 4)
    assert s.shape == (1, 4, 3)
    assert s[0, :, 0].tolist() == [0, 1, 2, 3]  # a column = 4 consecutive samples
    assert s[0, 1].tolist() == [1, 5, 9]  # a row = every 4th sample
    assert torch.equal(unsqueeze(s), x)
    cond = torch.randn(2, 3, 8)
    assert torch.equal(squeeze(cond, 4)[:, 2], squeeze(cond[:, 2], 4))
    with pytest.raises(ValueError):
        squeeze(torch.zeros(1, 10), 4)


def test_row_orders():
    rev = row_orders("reverse", 4, 3)
    assert rev.tolist() == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]
    assert row_orders("reverse", 16, 8)[1::2].eq(torch.arange(15, -1, -1)).all()
    x = torch.randn(2, 5, 3, 8)
    assert torch.equal(permute_rows(x, torch.tensor([2, 0, 1])), x[:, :, [2, 0, 1]])


def test_permuted_rows_pass_gradients_back_to_their_original_rows():
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64, requires_grad=True)
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    weights = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    (permute_rows(x, order) * weights).sum().backward()
    expected = torch.zeros_like(x).index_copy_(-2, order, weights)  # row i went to i's place
    assert torch.equal(x.grad, expected)
    assert torch.autograd.gradcheck(lambda t: permute_rows(t, order), (x,))
    # a channels-last input (the 2-D WaveNet's layout on a CPU) stays channels last
    last = x.detach().contiguous(memory_format=torch.channels_last)
    permuted = permute_rows(last, order)
    assert permuted.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(permuted, x.detach()[:, :, order])


def test_bipartized_row_orders_match_official_waveflow():
    # PaddlePaddle/Parakeet parakeet/models/waveflow.py (WaveFlow._create_perm, forward): after
    # flow i the rows are reversed if i < n_flows // 2, else each half is reversed on its own.
    ident, rev, bip = list(range(8)), list(range(7, -1, -1)), [3, 2, 1, 0, 7, 6, 5, 4]
    assert row_orders("bipartized", 8, 8).tolist() == [ident, rev] * 2 + [ident, bip] * 2
    assert row_orders("bipartized", 8, 4).tolist() == [ident, rev, ident, bip]
    # odd n_flows (the official code rejects them): the same n_flows // 2 split
    assert row_orders("bipartized", 8, 3).tolist() == [ident, rev, [4, 5, 6, 7, 0, 1, 2, 3]]
    for h in (16, 32, 64):
        half = list(range(h // 2))
        bip = half[::-1] + [h // 2 + i for i in half][::-1]
        orders = row_orders("bipartized", h, 8).tolist()
        assert orders[5] == orders[7] == bip
        assert orders[1] == orders[3] == list(range(h - 1, -1, -1))
        assert orders[0] == orders[2] == orders[4] == orders[6] == list(range(h))
    with pytest.raises(ValueError):
        row_orders("bipartized", 5, 4)


def test_invertible_conv_inverse_and_logdet():
    torch.manual_seed(0)
    conv = InvertibleConv1x1(4).double()
    with torch.no_grad():
        conv.weight.add_(0.3 * torch.randn(4, 4, dtype=torch.float64))  # leave det = 1
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    y, logdet = conv(x)
    x_back, inv_logdet = conv.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-10)
    jac = torch.autograd.functional.jacobian(lambda v: conv(v.reshape(1, 4, 3))[0], x)
    expected = torch.linalg.slogdet(jac.reshape(12, 12))[1]
    assert torch.allclose(logdet, expected.reshape(1))
    assert torch.allclose(inv_logdet, -logdet)


def test_invertible_conv_keeps_the_audio_out_of_autocast():
    torch.manual_seed(0)
    conv = InvertibleConv1x1(8)
    x = torch.randn(2, 8, 100)
    exact, _ = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = conv(x)
        x_back, _ = conv.inverse(y)
    assert y.dtype == x_back.dtype == torch.float32
    assert (y - exact).abs().max() < 1e-5 and (x_back - x).abs().max() < 1e-5


@pytest.mark.parametrize("elementwise", [AffineElementwise(), SplineElementwise(8, 3.0, 4)])
def test_elementwise_inverse_identity_and_logdet(elementwise):
    torch.manual_seed(0)
    p = elementwise.params_per_element
    x = torch.randn(3, 5, dtype=torch.float64) * 2
    zero = torch.zeros(3, p, 5, dtype=torch.float64)
    y, logdet = elementwise(x, zero)
    assert torch.allclose(y, x, atol=1e-12) and torch.allclose(logdet, torch.zeros_like(x))
    params = torch.randn(3, p, 5, dtype=torch.float64)
    y, logdet = elementwise(x, params)
    x_back, inv_logdet = elementwise.inverse(y, params)
    assert torch.allclose(x_back, x, atol=1e-8)
    assert torch.allclose(inv_logdet, -logdet, atol=1e-8)
    derivative = torch.autograd.grad(elementwise(x.requires_grad_(), params)[0].sum(), x)[0]
    assert torch.allclose(logdet, derivative.log(), atol=1e-8)


@pytest.mark.parametrize("elementwise", [AffineElementwise(), SplineElementwise(8, 3.0, 4)])
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_elementwise_maps_compute_in_float32_from_half_parameters(elementwise, half):
    """A network under autocast hands over bf16/fp16 parameters: the map, the audio and the
    log-det are still float32, as from the same parameters given in float32."""
    torch.manual_seed(0)
    x = torch.randn(3, 500) * 2
    params = (torch.randn(3, elementwise.params_per_element, 500) * 2).to(half)
    for direction in (elementwise.forward, elementwise.inverse):
        y, logdet = direction(x, params)
        want_y, want_logdet = direction(x, params.float())
        assert y.dtype == logdet.dtype == torch.float32
        assert torch.equal(y, want_y) and torch.equal(logdet, want_logdet)


class CausalConditioner(nn.Module):
    """A tiny conditioner causal over rows: a conv padded on top only."""

    def __init__(self, params: int):
        super().__init__()
        self.conv = nn.Conv2d(1, params, (2, 3), padding=0)
        nn.init.normal_(self.conv.weight, std=0.2)

    def forward(self, x):
        return self.conv(nn.functional.pad(x, (1, 1, 1, 0)))


@pytest.mark.parametrize("elementwise", [AffineElementwise(), SplineElementwise(8, 3.0, 1)])
def test_row_autoregressive_coupling(elementwise):
    torch.manual_seed(0)
    conditioner = CausalConditioner(elementwise.params_per_element)
    coupling = RowAutoregressiveCoupling(elementwise)
    x = torch.randn(2, 4, 6)
    y, logdet = coupling(x, conditioner)
    x_back, inv_logdet = coupling.inverse(y, conditioner)
    assert torch.allclose(x_back, x, atol=1e-5)
    assert torch.allclose(inv_logdet, -logdet, atol=1e-4)
    assert torch.equal(shift_down(x)[:, 0], torch.zeros(2, 6))
    assert torch.equal(shift_down(x)[:, 1:], x[:, :-1])


@pytest.mark.parametrize("elementwise", [AffineElementwise(), SplineElementwise(8, 3.0, 1)])
def test_channel_coupling(elementwise):
    torch.manual_seed(0)
    coupling = ChannelCoupling(elementwise)
    net = nn.Conv1d(3, elementwise.params_per_element * 3, 3, padding=1)
    x = torch.randn(2, 6, 10)
    y, logdet = coupling(x, net)
    assert torch.equal(y[:, :3], x[:, :3])
    assert not torch.allclose(y[:, 3:], x[:, 3:], atol=1e-3)
    x_back, inv_logdet = coupling.inverse(y, net)
    assert torch.allclose(x_back, x, atol=1e-5)
    assert torch.allclose(inv_logdet, -logdet, atol=1e-5)
