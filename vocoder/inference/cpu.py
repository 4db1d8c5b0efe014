"""The CPU fast path: each layer of an incremental row step as one GEMM.

`IncrementalInverse` runs a layer-row as `conv1d` over a `[B, k*C, W]` ring of rows; on a
CPU oneDNN gives that 1-row conv only part of the matrix-multiply rate, in bf16 much less.
Here every layer keeps its ring already unfolded (im2col), channels last:
`cols[l]` `[B, W, k taps, k slots, C]` (+ a ones column for the bias), where
`cols[l][b, w, t, s] = ring slot s at column w + t*d - p` (zero outside the row). Writing a
layer's new input row scatters it into its slot at the k tap shifts (k copies of
`[B, W, C]`, the only data movement), and then the layer's dilated conv, its bias, and the
per-row conditioning projection are one GEMM `[B*W, k*k*C + 1] @ [k*k*C + 1, 2C]` with
the conditioning as addend; the residual 1x1 conv is one GEMM with the layer's input row
as addend, and the output projection one GEMM over the stacked hidden states. A few large
GEMMs per layer-row for the whole batch: the shape oneDNN/BLAS run fastest (AVX512-BF16
or AMX in bf16). The gate is `tanh(a1) * sigmoid(a2) = s2 - 2 s1 s2` with
`s = sigmoid(a)` and the tanh half's weights pre-scaled by -2 (exact: a power of two), so
two elementwise passes.

Numerically it is `IncrementalInverse`'s computation (the same folded weights, summed in
another order): in fp32 the two agree to float rounding; padded batches are masked the
same way. `make_cpu_row_inverse` picks this path on the CPU where it is faster (bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.inference.compile import RowFlows
from vocoder.inference.incremental import IncrementalInverse


@dataclass
class PackedLayer:
    """One gated layer of one flow as GEMM operands (tanh half pre-scaled by -2)."""

    conv: Tensor  # [k phases, k*k*C + 1, 2C]: every tap and slot, the folded bias last
    dilation: int
    padding: int
    res_weight: Tensor | None  # [C + 1, C]: transposed residual half, its bias last
    proj: tuple[bool, int]  # its conditioning projection: (in the shared group?, first channel)


@dataclass
class PackedFlow:
    order: list[int]
    front_weight: Tensor  # [C]
    front_bias: Tensor  # [C]
    layers: list[PackedLayer]
    out_weight: Tensor  # [L*(C+1), P]: projection of the stacked [hidden_l, 1] blocks
    own_weight: Tensor | None  # [n_mels, n*2C]


def _tanh_scale(channels: int, like: Tensor) -> Tensor:
    """[2C] of -2 (tanh half) and 1 (sigmoid half): tanh(a) = 1 - 2 sigmoid(-2a)."""
    scale = torch.ones(2 * channels, dtype=like.dtype, device=like.device)
    scale[:channels] = -2.0
    return scale


def _scaled_projection(weight: Tensor | None, channels: int) -> Tensor | None:
    """`[n*2C, n_mels]` conditioning weights -> `[n_mels, n*2C]`, tanh halves scaled."""
    if weight is None:
        return None
    scale = _tanh_scale(channels, weight).repeat(weight.shape[0] // (2 * channels))
    return (weight * scale[:, None]).t().contiguous()


def pack_flows(rows: RowFlows) -> list[PackedFlow]:
    """Transpose, scale and stack `rows`' weights into GEMM operands (exact rescaling)."""
    c = rows.channels
    flows = []
    for flow in rows.flows:
        layers = []
        for layer in flow.layers:
            w = layer.conv_weights  # [k, 2C, kC, k taps]
            scale = _tanh_scale(c, w)
            taps = (w * scale[:, None, None]).permute(0, 3, 2, 1)  # [k, k taps, kC, 2C]
            taps = taps.reshape(w.shape[0], -1, 2 * c)
            bias = (layer.conv_bias * scale).expand(w.shape[0], 1, -1)
            res = None
            if layer.res_weight is not None:
                res = torch.cat([layer.res_weight[:, :, 0].t(), layer.res_bias[None]]).contiguous()
            layers.append(
                PackedLayer(
                    conv=torch.cat([taps, bias], dim=1).contiguous(),
                    dilation=layer.dilation,
                    padding=layer.padding,
                    res_weight=res,
                    proj=(layer.shared, layer.proj_start),
                )
            )
        out_weight = flow.out_weight[:, :, 0].t()  # [L*C, P]
        blocks = []
        for l in range(len(flow.layers)):
            bias_row = flow.out_bias if l == 0 else torch.zeros_like(flow.out_bias)
            blocks += [out_weight[l * c : (l + 1) * c], bias_row[None]]
        flows.append(
            PackedFlow(
                order=flow.order,
                front_weight=flow.front_weight.flatten(),
                front_bias=flow.front_bias.flatten(),
                layers=layers,
                out_weight=torch.cat(blocks).contiguous(),
                own_weight=_scaled_projection(flow.cond_weight, c),
            )
        )
    return flows


@dataclass
class GemmBuffers:
    """Working memory of one (batch, width) run."""

    x: Tensor  # [B, h, W] float32
    cols: Tensor  # [L, B, W, k*k*C + 1]: unfolded rings; last column all ones (bias input)
    inputs: Tensor  # [L, B, W, C]: each layer's input at the current row
    gate: Tensor  # [B, W, 2C]: a layer's pre-activation
    hidden: Tensor  # [B, W, L*(C+1)]: [hidden_l, 1] blocks


class GemmRowInverse(IncrementalInverse):
    """`IncrementalInverse` with each layer-row as GEMMs (the CPU fast path); see the
    module docstring. Same call: `(z [B, T], cond [B, n_mels, T], lengths) -> audio`."""

    def __init__(self, rows: RowFlows):
        super().__init__(rows)
        self.packed = pack_flows(rows)
        self.shared_weight = _scaled_projection(rows.shared_cond_weight, rows.channels)

    def allocate_gemm(self, batch: int, width: int) -> GemmBuffers:
        r = self.rows
        c, k, L = r.channels, r.kernel_size, r.n_layers
        dev, dt = r.device, r.dtype
        cols = torch.zeros(L, batch, width, k * k * c + 1, device=dev, dtype=dt)
        cols[..., -1] = 1.0
        hidden = torch.zeros(batch, width, L, c + 1, device=dev, dtype=dt)
        hidden[..., -1] = 1.0
        return GemmBuffers(
            x=torch.zeros(batch, r.n_group, width, device=dev),
            cols=cols,
            inputs=torch.zeros(L, batch, width, c, device=dev, dtype=dt),
            gate=torch.empty(batch, width, 2 * c, device=dev, dtype=dt),
            hidden=hidden.view(batch, width, L * (c + 1)),
        )

    @torch.no_grad()
    def __call__(self, z: Tensor, cond: Tensor, lengths: list[int] | None = None) -> Tensor:
        z_sq, keep = self.latent_rows(z, lengths)
        # [B, n_mels, T] -> [h, B, W, n_mels]: conditioning rows, channels last
        cond_rows = squeeze(cond, self.rows.n_group).permute(2, 0, 3, 1)
        cond_rows = cond_rows.to(self.rows.device, self.rows.dtype).contiguous()
        pad = None if keep is None else ~keep.transpose(1, 2)  # [B, W, 1]
        buffers = self.allocate_gemm(z_sq.shape[0], z_sq.shape[2])
        return unsqueeze(self.run_gemm(buffers, z_sq, cond_rows, pad))

    @staticmethod
    def _project(weight: Tensor | None, cond_rows: Tensor) -> Tensor | None:
        """`[h, B*W, n*2C]` conditioning projections of `[h, B, W, n_mels]` rows."""
        if weight is None:
            return None
        flat = torch.mm(cond_rows.reshape(-1, cond_rows.shape[-1]), weight)
        return flat.view(cond_rows.shape[0], -1, weight.shape[1])

    def _scatter(self, cols: Tensor, row: Tensor, slot: int, layer: PackedLayer) -> None:
        """Write a layer's input row `[B, W, C]` into ring slot `slot` of its unfolded ring
        `cols` `[B, W, k*k*C + 1]` at every tap's shift."""
        c, k = self.rows.channels, self.rows.kernel_size
        width = row.shape[1]
        for t in range(k):
            shift = t * layer.dilation - layer.padding
            if abs(shift) >= width:
                continue  # this tap only ever sees the zero padding
            start = (t * k + slot) * c
            block = cols[:, :, start : start + c]
            if shift >= 0:
                block[:, : width - shift].copy_(row[:, shift:])
            else:
                block[:, -shift:].copy_(row[:, : width + shift])

    def run_gemm(
        self, buffers: GemmBuffers, z_sq: Tensor, cond_rows: Tensor, pad: Tensor | None
    ) -> Tensor:
        """Invert all flows into `buffers.x` (returned): z_sq `[B, h, W]` float32,
        cond_rows `[h, B, W, n_mels]`, pad `[B, W, 1]` bool (True on padding) or None."""
        r = self.rows
        c, k = r.channels, r.kernel_size
        x, cols, inputs, gate, hidden = (
            buffers.x,
            buffers.cols,
            buffers.inputs,
            buffers.gate,
            buffers.hidden,
        )
        batch, _, width = x.shape
        n = batch * width
        shared = self._project(self.shared_weight, cond_rows)
        finish = r.elementwise.inverse
        prev = torch.zeros(batch, width, 1, device=x.device, dtype=r.dtype)
        zeros = prev
        gate_2d = gate.view(n, 2 * c)
        x.copy_(z_sq)
        for flow in reversed(self.packed):
            own = self._project(flow.own_weight, cond_rows)
            cols[..., :-1].zero_()
            prev = zeros
            for i, row in enumerate(flow.order):
                phase = i % k
                torch.addcmul(flow.front_bias, prev, flow.front_weight, out=inputs[0])
                if pad is not None:
                    inputs[0].masked_fill_(pad, 0.0)
                for l, layer in enumerate(flow.layers):
                    self._scatter(cols[l], inputs[l], phase, layer)
                    is_shared, start = layer.proj
                    cond = (shared if is_shared else own)[row, :, start : start + 2 * c]
                    # a = cond + bias + conv(ring): one GEMM over every tap and slot
                    torch.addmm(cond, cols[l].view(n, -1), layer.conv[phase], out=gate_2d)
                    # tanh(a1) * sigmoid(a2) = s2 - 2 s1 s2, s = sigmoid(a), a1 scaled by -2
                    gate.sigmoid_()
                    hid = hidden[..., l * (c + 1) : (l + 1) * (c + 1)]
                    torch.addcmul(
                        gate[..., c:], gate[..., :c], gate[..., c:], value=-2.0, out=hid[..., :c]
                    )
                    if layer.res_weight is not None:
                        nxt = inputs[l + 1].view(n, c)
                        torch.addmm(
                            inputs[l].view(n, c), hid.reshape(n, c + 1), layer.res_weight, out=nxt
                        )
                        if pad is not None:
                            inputs[l + 1].masked_fill_(pad, 0.0)
                params = torch.mm(hidden.view(n, -1), flow.out_weight)
                params = params.view(batch, width, -1).permute(0, 2, 1).float()
                x_row = finish(x[:, row], params)[0]
                x[:, row] = x_row
                prev = x_row.unsqueeze(-1).to(r.dtype)
        return x


def make_cpu_row_inverse(rows: RowFlows) -> IncrementalInverse:
    """The faster CPU row engine for `rows`: the GEMM path in bf16 (about twice the conv1d
    path's rate there), the conv1d `IncrementalInverse` in fp32 (no faster as GEMMs, and
    it stays the exact reference path)."""
    if rows.dtype == torch.bfloat16:
        return GemmRowInverse(rows)
    return IncrementalInverse(rows)


__all__ = ["GemmRowInverse", "make_cpu_row_inverse", "pack_flows"]
