"""Incremental row synthesis: the inverse of WaveFlow/NanoFlow at O(1) network work per row.

The plain inverse (`RowAutoregressiveCoupling.inverse`) produces row i of a flow by running
the whole 2-D WaveNet over all h rows again, so a flow costs h full network passes. But
row i's parameters depend only on rows < i, and every layer is causal over rows with a
height-3 kernel and height dilation 1: computing layer l at row i needs only layer l's input
at rows i-2, i-1 and i. So each layer keeps a ring of its last k (= kernel size) input rows,
`rings[l]` `[B, k*C, W]`, row j in slot j % k, and one row step runs every layer on a single
row over the full width: a flow costs h row steps of one layer-row each, i.e. one network
pass in total.

One row step of flow k (rows in the flow's own order; r = the row's original position):

    h_0      = front(x of the previous step's row)  (zeros for the flow's first row)
    layer l  a = conv1d(rings[l], rotated weight, bias of (k, l)) + cond_proj[l][r]
             hidden_l = tanh(a[:C]) * sigmoid(a[C:])          -> stacked in `hidden`
             h_{l+1}  = h_l + res_l(hidden_l)                  -> written into rings[l+1]
    params   = out_k(hidden)  (the skip sum and projection, folded by `compile`)
    x[r]     = elementwise inverse of z[r] with params         (float32)

Batches of different lengths are padded to the longest; `keep` marks each item's real
columns. Every layer input is zeroed outside them, exactly the zero padding the
width-convolutions see when the item runs alone, so padded batches give the same audio as
unpadded runs (up to float rounding); what the padded columns contain never matters.

The arithmetic kernels of a step (`StepKernels`) are plain PyTorch here; the CUDA fast path
swaps in fused ones and captures the loop in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vocoder.flows.coupling import Elementwise
from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.inference.compile import RowFlows


@dataclass
class RowBuffers:
    """Working memory of one (batch, width) run; reused across runs of that shape."""

    x: Tensor  # [B, h, W] float32: z in, audio out (rows overwritten as they are produced)
    rings: Tensor  # [L, B, k*C, W]: each layer's last k input rows
    hidden: Tensor  # [B, L*C, W]: every layer's gated activation at the current row
    zeros: Tensor  # [B, 1, W]: the shifted-down input of a flow's first row


@dataclass(frozen=True)
class StepKernels:
    """The elementwise parts of a row step, replaceable by fused versions.

    gate(a, proj, out): `out = tanh(a[:, :C] + proj[:, :C]) * sigmoid(a[:, C:] + proj[:, C:])`
        (may modify `a`).
    residual(h, res, pad, out): `out = h + res`, zero where `pad` (`[B, 1, W]`, or None).
    finish(y, params): the float32 inverse elementwise map of one row `[B, W]`.
    """

    gate: Callable[[Tensor, Tensor, Tensor], None]
    residual: Callable[[Tensor, Tensor, Tensor | None, Tensor], None]
    finish: Callable[[Tensor, Tensor], Tensor]


def eager_kernels(elementwise: Elementwise) -> StepKernels:
    """Plain PyTorch step kernels (in place where possible)."""

    def gate(a: Tensor, proj: Tensor, out: Tensor) -> None:
        c = out.shape[1]
        a.add_(proj)
        torch.mul(a[:, :c].tanh_(), a[:, c:].sigmoid_(), out=out)

    def residual(h: Tensor, res: Tensor, pad: Tensor | None, out: Tensor) -> None:
        torch.add(h, res, out=out)
        if pad is not None:
            out.masked_fill_(pad, 0.0)

    def finish(y: Tensor, params: Tensor) -> Tensor:
        return elementwise.inverse(y, params)[0]

    return StepKernels(gate, residual, finish)


def column_mask(lengths: list[int], width: int, device: torch.device) -> Tensor | None:
    """`keep` `[B, 1, width]` for items of `lengths` columns; None when none is padded."""
    if all(n == width for n in lengths):
        return None
    columns = torch.arange(width, device=device)
    limits = torch.tensor(lengths, device=device)
    return (columns[None, :] < limits[:, None]).unsqueeze(1)


class IncrementalInverse:
    """The inverse of a `RowFlows` model, one row step at a time; see the module docstring."""

    def __init__(self, rows: RowFlows, kernels: StepKernels | None = None):
        self.rows = rows
        self.kernels = kernels or eager_kernels(rows.elementwise)

    def allocate(self, batch: int, width: int) -> RowBuffers:
        r = self.rows
        c, k, L = r.channels, r.kernel_size, r.n_layers
        dev, dt = r.device, r.dtype
        return RowBuffers(
            x=torch.zeros(batch, r.n_group, width, device=dev, dtype=torch.float32),
            rings=torch.zeros(L, batch, k * c, width, device=dev, dtype=dt),
            hidden=torch.zeros(batch, L * c, width, device=dev, dtype=dt),
            zeros=torch.zeros(batch, 1, width, device=dev, dtype=dt),
        )

    def cond_rows(self, cond: Tensor) -> Tensor:
        """Conditioning `[B, n_mels, T]` -> `[n_mels, h, B, T/h]` in the network's dtype."""
        rows = squeeze(cond, self.rows.n_group).permute(1, 2, 0, 3)
        return rows.to(self.rows.device, self.rows.dtype).contiguous()

    @torch.no_grad()
    def __call__(self, z: Tensor, cond: Tensor, lengths: list[int] | None = None) -> Tensor:
        """Audio `[B, T]` for latent `z` `[B, T]` and upsampled conditioning `[B, n_mels, T]`.

        `lengths`: each item's real length in samples (multiples of h) when the batch is
        padded; the output beyond an item's length is meaningless.
        """
        z_sq, keep = self.latent_rows(z, lengths)
        buffers = self.allocate(z_sq.shape[0], z_sq.shape[2])
        return unsqueeze(self.run(buffers, z_sq, self.cond_rows(cond), keep))

    def latent_rows(self, z: Tensor, lengths: list[int] | None) -> tuple[Tensor, Tensor | None]:
        """Latent `[B, T]` -> (`[B, h, T/h]` float32 rows, `[B, 1, T/h]` bool mask of each
        item's real columns, or None when `lengths` is None)."""
        h = self.rows.n_group
        z_sq = squeeze(z.to(self.rows.device, torch.float32), h)
        if lengths is None:
            return z_sq, None
        return z_sq, column_mask([n // h for n in lengths], z_sq.shape[2], self.rows.device)

    def run(
        self, buffers: RowBuffers, z_sq: Tensor, cond_rows: Tensor, keep: Tensor | None
    ) -> Tensor:
        """Invert all flows into `buffers.x` (returned): z_sq `[B, h, W]` float32,
        cond_rows `[n_mels, h, B, W]`, keep `[B, 1, W]` bool or None.

        Allocates nothing whose shape depends on the data, so it can be captured in a
        CUDA graph.
        """
        r = self.rows
        kern = self.kernels
        c, k = r.channels, r.kernel_size
        x, rings, hidden = buffers.x, buffers.rings, buffers.hidden
        x.copy_(z_sq)
        pad = None if keep is None else ~keep
        shared = r.project(r.shared_cond_weight, cond_rows)
        for flow in reversed(r.flows):
            own = r.project(flow.cond_weight, cond_rows)
            rings.zero_()
            prev = buffers.zeros
            for i, row in enumerate(flow.order):
                phase = i % k
                slot = slice(phase * c, (phase + 1) * c)
                h0 = rings[0][:, slot]
                torch.addcmul(flow.front_bias, flow.front_weight, prev, out=h0)
                if pad is not None:
                    h0.masked_fill_(pad, 0.0)
                for l, layer in enumerate(flow.layers):
                    ring = rings[l]
                    source = shared if layer.shared else own
                    # [2C, B, W] of the [n*2C, h, B, W] projections, seen as [B, 2C, W]
                    proj = source[layer.proj_start : layer.proj_start + 2 * c, row].transpose(0, 1)
                    a = F.conv1d(
                        ring,
                        layer.conv_weights[phase],
                        layer.conv_bias,
                        padding=layer.padding,
                        dilation=layer.dilation,
                    )
                    hid = hidden[:, l * c : (l + 1) * c]
                    kern.gate(a, proj, hid)
                    if layer.res_weight is not None:
                        res = F.conv1d(hid, layer.res_weight, layer.res_bias)
                        kern.residual(ring[:, slot], res, pad, rings[l + 1][:, slot])
                params = F.conv1d(hidden, flow.out_weight, flow.out_bias)
                x_row = kern.finish(x[:, row], params)
                x[:, row] = x_row
                prev = x_row.unsqueeze(1).to(r.dtype)
        return x


__all__ = ["IncrementalInverse", "RowBuffers", "StepKernels", "column_mask", "eager_kernels"]
