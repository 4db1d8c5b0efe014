"""The CPU fast path: each row step of the incremental engine as a few GEMMs.

`IncrementalInverse` runs a layer-row as `conv1d` over a `[B, k*C, W]` ring of rows. On a
CPU that conv reaches only part of the matrix-multiply rate (oneDNN picks a direct-conv
kernel for a 1-row input; large width dilations are slower still), and the conditioning
add, bias and residual each cost another pass. Here the same step is plain GEMMs, the
work BLAS/oneDNN runs fastest (AVX512-bf16 or AMX for bf16):

- Layout channels-last: every layer's ring is `[B, P + W + P, k*C + 1]` (row j of a flow in
  column block j % k, as in `IncrementalInverse`), with P zero columns on each side (P the
  largest width padding). A width tap t of a layer with dilation d and padding p then reads
  the contiguous row block `ring[P - p + t*d : ... + W]`, so the dilated conv is k
  accumulating GEMMs `[W, k*C] @ [k*C, 2C]` on pre-transposed, per-ring-phase weights.
- Biases cost no pass: each ring has a last column of ones, and width tap 0's weights (one
  copy per flow and ring phase) carry the flow's folded bias (conv + conditioning +
  NanoFlow's additive bias) as their last row; each layer's hidden block `[hidden_l, 1]`
  does the same for the residual bias and the output projection's bias. The first GEMM's
  addend is the layer's conditioning projection for that row (per utterance, as before).
- The residual 1x1 conv is one GEMM whose addend is the layer's input row,
  `h_{l+1} = h_l + [hidden_l, 1] @ [R_l; b_l]`, written straight into the next layer's
  ring. The output projection is one GEMM over the stacked hidden blocks.
- The gate needs no tanh (slow in bf16): the tanh half of every weight and bias is scaled
  by -2 (exact: a power of two), so with s = sigmoid(a) over all 2C channels,
  `tanh(a1) * sigmoid(a2) = s2 - 2 s1 s2`: two passes (sigmoid, addcmul) instead of three.
  Nothing is allocated per step except the float32 elementwise inverse.

Numerically it is the same computation as `IncrementalInverse` (the same folded weights,
summed in another order, tanh through sigmoid): in fp32 the two agree to float rounding
(1e-6 here); in bf16 both are within the bound tests/test_cpu_engine.py holds.
Batches of several items run the GEMMs per item (the padded ring rows of one item must
not meet the next); the masking of padded batches is `IncrementalInverse`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.inference.compile import RowFlows
from vocoder.inference.incremental import IncrementalInverse, column_mask


@dataclass
class PackedLayer:
    """One gated layer of one flow, as GEMM operands (tanh half pre-scaled by -2)."""

    first_tap: Tensor  # [k phases, k*C + 1, 2C]: width tap 0, the folded bias as last row
    taps: Tensor  # [k phases, k taps, k*C, 2C]: every tap (tap 0 unused), shared by flows
    dilation: int
    padding: int
    res_weight: Tensor | None  # [C + 1, C]: transposed residual half, its bias as last row
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
    """Transpose, scale and split `rows`' weights into GEMM operands. Every scale is a
    power of two, so in any precision the packed weights are the compiled ones, exactly
    rescaled."""
    c = rows.channels
    packed_taps: dict[int, Tensor] = {}

    def taps(conv_weights: Tensor) -> Tensor:
        # [k, 2C, kC, k] -> [k, k, kC, 2C], tanh half scaled
        if id(conv_weights) not in packed_taps:
            scale = _tanh_scale(c, conv_weights)
            packed_taps[id(conv_weights)] = (
                (conv_weights * scale[:, None, None]).permute(0, 3, 2, 1).contiguous()
            )
        return packed_taps[id(conv_weights)]

    flows = []
    for flow in rows.flows:
        layers = []
        blocks = []
        for layer in flow.layers:
            all_taps = taps(layer.conv_weights)
            bias = layer.conv_bias * _tanh_scale(c, layer.conv_bias)
            first = torch.cat([all_taps[:, 0], bias.expand(all_taps.shape[0], 1, -1)], dim=1)
            res = None
            if layer.res_weight is not None:
                res = torch.cat([layer.res_weight[:, :, 0].t(), layer.res_bias[None]]).contiguous()
            layers.append(
                PackedLayer(
                    first_tap=first.contiguous(),
                    taps=all_taps,
                    dilation=layer.dilation,
                    padding=layer.padding,
                    res_weight=res,
                    proj=(layer.shared, layer.proj_start),
                )
            )
        out_weight = flow.out_weight[:, :, 0].t()  # [L*C, P]
        for l in range(len(flow.layers)):
            ones_row = flow.out_bias if l == 0 else torch.zeros_like(flow.out_bias)
            blocks += [out_weight[l * c : (l + 1) * c], ones_row[None]]
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
    rings: Tensor  # [L, B, P + W + P, k*C + 1]: last column all ones (the bias input)
    gate: Tensor  # [B, W, 2C]: a layer's pre-activation
    hidden: Tensor  # [B, W, L*(C+1)]: [hidden_l, 1] blocks


class GemmRowInverse(IncrementalInverse):
    """`IncrementalInverse` with each row step as GEMMs (the CPU fast path); see the
    module docstring. Same call: `(z [B, T], cond [B, n_mels, T], lengths) -> audio`."""

    def __init__(self, rows: RowFlows):
        super().__init__(rows)
        self.packed = pack_flows(rows)
        self.max_padding = max(
            (layer.padding for flow in self.packed for layer in flow.layers), default=0
        )
        self.shared_weight = _scaled_projection(rows.shared_cond_weight, rows.channels)

    def allocate_gemm(self, batch: int, width: int) -> GemmBuffers:
        r = self.rows
        c, k, L, h = r.channels, r.kernel_size, r.n_layers, r.n_group
        dev, dt = r.device, r.dtype
        rings = torch.zeros(L, batch, width + 2 * self.max_padding, k * c + 1, device=dev, dtype=dt)
        rings[..., -1] = 1.0
        hidden = torch.zeros(batch, width, L, c + 1, device=dev, dtype=dt)
        hidden[..., -1] = 1.0
        return GemmBuffers(
            x=torch.zeros(batch, h, width, device=dev),
            rings=rings,
            gate=torch.empty(batch, width, 2 * c, device=dev, dtype=dt),
            hidden=hidden.view(batch, width, L * (c + 1)),
        )

    @torch.no_grad()
    def __call__(self, z: Tensor, cond: Tensor, lengths: list[int] | None = None) -> Tensor:
        h = self.rows.n_group
        z_sq = squeeze(z.to(self.rows.device, torch.float32), h)
        batch, _, width = z_sq.shape
        keep = None
        if lengths is not None:
            keep = column_mask([n // h for n in lengths], width, self.rows.device)
        buffers = self.allocate_gemm(batch, width)
        # [B, n_mels, T] -> [h, B, W, n_mels]: conditioning rows, channels last
        cond_rows = squeeze(cond, h).permute(2, 0, 3, 1)
        cond_rows = cond_rows.to(self.rows.device, self.rows.dtype).contiguous()
        pad = None if keep is None else ~keep.transpose(1, 2)  # [B, W, 1]
        return unsqueeze(self.run_gemm(buffers, z_sq, cond_rows, pad))

    @staticmethod
    def _project(weight: Tensor | None, cond_rows: Tensor) -> Tensor | None:
        """`[h, B, W, n*2C]` conditioning projections of `[h, B, W, n_mels]` rows."""
        if weight is None:
            return None
        flat = torch.mm(cond_rows.reshape(-1, cond_rows.shape[-1]), weight)
        return flat.view(*cond_rows.shape[:-1], weight.shape[1])

    def run_gemm(
        self, buffers: GemmBuffers, z_sq: Tensor, cond_rows: Tensor, pad: Tensor | None
    ) -> Tensor:
        """Invert all flows into `buffers.x` (returned): z_sq `[B, h, W]` float32,
        cond_rows `[h, B, W, n_mels]`, pad `[B, W, 1]` bool (True on padding) or None."""
        r = self.rows
        c, k = r.channels, r.kernel_size
        kc = k * c
        x, rings, gate, hidden = buffers.x, buffers.rings, buffers.gate, buffers.hidden
        batch, _, width = x.shape
        P = self.max_padding
        x.copy_(z_sq)
        inner = rings[:, :, P : P + width]  # [L, B, W, kC + 1]: the real columns
        shared = self._project(self.shared_weight, cond_rows)
        finish = r.elementwise.inverse
        items = range(batch)
        zeros = torch.zeros(batch, width, 1, device=x.device, dtype=r.dtype)
        for flow in reversed(self.packed):
            own = self._project(flow.own_weight, cond_rows)
            rings[..., :kc].zero_()
            prev = zeros
            for i, row in enumerate(flow.order):
                phase = i % k
                slot = slice(phase * c, (phase + 1) * c)
                h0 = inner[0, :, :, slot]
                torch.addcmul(flow.front_bias, prev, flow.front_weight, out=h0)
                if pad is not None:
                    h0.masked_fill_(pad, 0.0)
                for l, layer in enumerate(flow.layers):
                    is_shared, start = layer.proj
                    cond = (shared if is_shared else own)[row, ..., start : start + 2 * c]
                    first, d = P - layer.padding, layer.dilation
                    tap0, taps = layer.first_tap[phase], layer.taps[phase]
                    for b in items:
                        ring, a = rings[l, b], gate[b]
                        # a = cond + bias + sum over taps of ring rows @ tap weights
                        torch.addmm(cond[b], ring[first : first + width], tap0, out=a)
                        for t in range(1, k):
                            rows_t = ring[first + t * d : first + t * d + width, :kc]
                            a.addmm_(rows_t, taps[t])
                    # tanh(a1) * sigmoid(a2) = s2 - 2 s1 s2 with s = sigmoid(a), a1 scaled by -2
                    gate.sigmoid_()
                    hid = hidden[..., l * (c + 1) : (l + 1) * (c + 1)]
                    torch.addcmul(
                        gate[..., c:], gate[..., :c], gate[..., c:], value=-2.0, out=hid[..., :c]
                    )
                    if layer.res_weight is not None:
                        nxt, cur = inner[l + 1, :, :, slot], inner[l, :, :, slot]
                        for b in items:
                            torch.addmm(cur[b], hid[b], layer.res_weight, out=nxt[b])
                        if pad is not None:
                            nxt.masked_fill_(pad, 0.0)
                params = torch.mm(hidden.view(batch * width, -1), flow.out_weight)
                params = params.view(batch, width, -1).permute(0, 2, 1).float()
                x_row = finish(x[:, row], params)[0]
                x[:, row] = x_row
                prev = x_row.unsqueeze(-1).to(r.dtype)
        return x


__all__ = ["GemmRowInverse", "pack_flows"]
