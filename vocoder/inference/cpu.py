"""The CPU row engine: each layer of an incremental row step as a few GEMMs.

`IncrementalInverse` runs a layer-row as `conv1d` over a `[B, k*C, W]` ring of rows; on a
CPU oneDNN gives that 1-row conv only part of the matrix-multiply rate, in bf16 much less.
Here every layer's ring is channels last and zero-padded along the width: `rings[l]`
`[p + W + p, k*C]` (one lane, below), ring slot s in channels `s*C:(s+1)*C`, p the
layer's padding. Tap t of the layer's dilated conv (dilation d) then reads rows
`t*d : t*d + W` of the ring, a plain matrix (a ring row is exactly k*C wide): no
unfolding, no copies. One layer-row is

    a   = cond_row @ cond_l  (the conditioning projection and the folded bias, through a
          ones column)  +  sum over taps t of  rings[l][t*d : t*d + W] @ taps_l[phase, t]
    s   = sigmoid(a); hidden_l = s2 - 2 s1 s2  (= tanh(a1) * sigmoid(a2): a1's weights are
          pre-scaled by -2, exact, and tanh(x) = 1 - 2 sigmoid(-2x))
    g_{l+1} = g_l + hidden_l @ res_l   written straight into rings[l+1]'s slot

where the ring holds each layer's input less a constant: g_l = h_l - offset_l, offset_l
the sum of the residual biases of the layers below (zero for layer 0), and -offset_l where
the input is zero (the width padding, the rows before a flow's first, the gaps in a lane).
Then the residual needs no bias, one GEMM with its addend instead of an add and a GEMM,
and the taps see h_l less offset_l @ (all taps), a constant added back through the
conditioning's bias row.

k + 2 GEMMs accumulating in place, two elementwise passes, nothing allocated; the output
projection is one GEMM over the stacked `[hidden_l, 1]` blocks. The ring stays small
(k*C channels), so a layer's taps re-read it from cache, and every view the loop uses is
made once per run. The k + 1 GEMMs of `a` run on weights that oneDNN prepacked once
(`onednn_prepack`), chained through its fused addend: in fp32 always, in bf16 for wide
models.

A batch is not padded: its items are laid end to end in lanes (`pack_lanes`), one run of
the loop above per lane, the columns between two items as wide as the widest padding and
masked like padding (zero input, so no tap of one item sees another). Short clips then
share wide GEMMs instead of paying each GEMM's fixed cost on a few hundred columns.

Numerically it is `IncrementalInverse`'s computation (the same folded weights, summed in
another order): in fp32 the two agree to float rounding, and an item's audio does not
depend on its batch. `vocoder.inference.engine.make_row_inverse` picks it on the CPU, in
both precisions (bench/cpu_engine.py and bench/cpu_batch.py have the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor

from vocoder.flows.squeeze import unsqueeze
from vocoder.inference.compile import RowFlows
from vocoder.inference.incremental import IncrementalInverse
from vocoder.precision import onednn_bf16

# In bf16, prepacked oneDNN weights pay from this width on (bench/cpu_engine.py: NanoFlow-r128
# about 10% faster; WaveFlow-r64 and the small model slower: there a new output tensor
# per GEMM costs more than the repacking it saves). In fp32 they pay at every width: on an
# AMD EPYC (Zen 4) the small model 1.37x, WaveFlow-r64 1.6x, NanoFlow-r128 1.78x.
PREPACK_MIN_CHANNELS = 128
# Items of a batch share a lane up to this many columns (`pack_lanes`). A narrow lane leaves
# the GEMMs' fixed cost per call unpaid, a wide one falls out of cache: fp32 sooner (the
# README has bench/cpu_batch.py's figures; 8k columns in bf16 was the best or within noise
# of it for the small model on AMX and on AVX512-BF16, where WaveFlow-r64 lost up to 12% at
# 16k; fp32 1.05x batch 1 at 2k on AMX, 0.95x at 8k).
LANE_COLUMNS = {torch.float32: 2048, torch.bfloat16: 8192, torch.float16: 8192}


@dataclass
class PackedLayer:
    """One gated layer of one flow as GEMM operands (tanh half pre-scaled by -2)."""

    taps: list[list[Tensor]]  # [phase][tap] -> [k*C, 2C]: ring row -> pre-activation
    cond: Tensor  # [E, 2C]: conditioning row, then the folded bias (the ones column), zeros
    dilation: int
    padding: int
    res_weight: Tensor | None  # [C, C]: transposed residual half; None: the last layer
    # [k*C]: what the ring holds where the layer input is zero (-offset_l, once per slot)
    ring_fill: Tensor
    res_fill: Tensor | None  # [C]: the next layer's -offset, its value in a lane's gaps
    # cond and taps again in oneDNN's own layout (`onednn_prepack`), or None
    prepacked: tuple[Tensor, list[list[Tensor]]] | None = None


@dataclass
class PackedFlow:
    order: list[int]
    front_weight: Tensor  # [C]
    front_bias: Tensor  # [C]
    layers: list[PackedLayer]
    # [P, L*(C+1)]: projection of the stacked [hidden_l, 1] blocks, in `F.linear`'s layout:
    # with P = 2 outputs MKL's fp32 GEMM runs it 4-7x faster than in the [L*(C+1), P] one
    out_weight: Tensor


def _tanh_scale(channels: int, like: Tensor) -> Tensor:
    """[2C] of -2 (tanh half) and 1 (sigmoid half): tanh(a) = 1 - 2 sigmoid(-2a)."""
    scale = torch.ones(2 * channels, dtype=like.dtype, device=like.device)
    scale[:channels] = -2.0
    return scale


def extra_columns(n_mels: int) -> int:
    """E: the columns of a conditioning row, its n_mels values and a one (the bias input)
    rounded up to 32, a multiple that AMX tiles take whole."""
    return -(-(n_mels + 1) // 32) * 32


def onednn_prepack(weight: Tensor) -> Tensor | None:
    """`weight` `[K, N]` reordered once into oneDNN's blocked layout for
    `torch.ops.mkldnn._linear_pointwise`, or None where this build lacks those ops.

    `torch.mm` repacks its second operand on every call; for the layer GEMMs of a wide
    model in bf16 that repacking is a third of the time. The ops are PyTorch's own
    (what its inductor freezing pass uses), private but stable within the pinned release.
    """
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), None)
    except (AttributeError, RuntimeError):
        return None


def onednn_linear(x: Tensor, packed: Tensor) -> Tensor:
    """`x @ weight` for a weight `onednn_prepack` made (a new tensor)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def pack_flows(rows: RowFlows) -> list[PackedFlow]:
    """Transpose, scale and stack `rows`' weights into GEMM operands (exact rescaling)."""
    c, n_mels = rows.channels, rows.config.n_mels
    ext = extra_columns(n_mels)
    flows = []
    for flow in rows.flows:
        layers = []
        offset = torch.zeros(c, dtype=torch.float64, device=rows.device)
        for layer in flow.layers:
            w = layer.conv_weights  # [k phases, 2C, kC, k taps]
            k = w.shape[0]
            scale = _tanh_scale(c, w)
            taps = (w * scale[:, None, None]).permute(0, 3, 2, 1).contiguous()  # [k, k, kC, 2C]
            group = rows.shared_cond_weight if layer.shared else flow.cond_weight
            projection = group[layer.proj_start : layer.proj_start + 2 * c]  # [2C, n_mels]
            cond = w.new_zeros(ext, 2 * c)
            cond[:n_mels] = (projection * scale[:, None]).t()
            # the ring holds input - offset everywhere (module docstring): the taps then see
            # their input less offset @ (all taps), a constant given back through the bias
            seen = offset.repeat(k) @ taps[0].double().sum(0)  # [2C]
            cond[n_mels] = (layer.conv_bias * scale).double() + seen
            ring_fill = (-offset).to(w.dtype).repeat(k)
            res, res_fill = None, None
            if layer.res_weight is not None:
                res = layer.res_weight[:, :, 0].t().contiguous()
                offset = offset + layer.res_bias.double()
                res_fill = (-offset).to(w.dtype)
            taps = [list(phase) for phase in taps]
            layers.append(
                PackedLayer(taps, cond, layer.dilation, layer.padding, res, ring_fill, res_fill)
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
                out_weight=torch.cat(blocks).t().contiguous(),
            )
        )
    return flows


def pack_lanes(columns: list[int], gap: int, limit: int) -> list[list[tuple[int, int]]]:
    """Items of `columns` columns laid end to end in lanes, `gap` columns apart: per lane,
    (item, first column) pairs, in order. A lane is closed before it would pass `limit`
    columns; an item wider than `limit` runs in a lane of its own."""
    lanes: list[list[tuple[int, int]]] = []
    end = 0
    for item, width in enumerate(columns):
        if lanes and end + gap + width <= limit:
            lanes[-1].append((item, end + gap))
            end += gap + width
        else:
            lanes.append([(item, 0)])
            end = width
    return lanes


@dataclass
class GemmBuffers:
    """Working memory of one lane of `width` columns, and the views the row steps use (made
    once: at small widths making them costs as much as the arithmetic)."""

    x: Tensor  # [h, W] float32
    rings: list[Tensor]  # per layer [p + W + p, k*C]; see the module docstring
    gate: Tensor  # [W, 2C]: a layer's pre-activation
    hidden: Tensor  # [W, L*(C+1)]: [hidden_l, 1] blocks
    tap_rows: list[list[Tensor]]  # [layer][tap]: the ring rows tap t reads
    slots: list[list[Tensor]]  # [layer][phase]: `[W, C]`, the input rows in that slot
    hiddens: list[Tensor]  # [layer]: `[W, C]`, hidden_l in its [hidden_l, 1] block


class GemmRowInverse(IncrementalInverse):
    """`IncrementalInverse` with each layer-row as GEMMs (the CPU engine); see the module
    docstring. Same call: `(z [B, T], cond [B, n_mels, T], lengths) -> audio`."""

    def __init__(
        self, rows: RowFlows, prepack: bool | None = None, lane_columns: int | None = None
    ):
        """`prepack`: run the conditioning and tap GEMMs on oneDNN-prepacked weights
        (default: on a CPU in fp32, and in bf16 where oneDNN runs bf16, for at least
        `PREPACK_MIN_CHANNELS` channels). `lane_columns`: the width up to which items of a
        batch are laid end to end (`pack_lanes`; default: `LANE_COLUMNS` of the dtype)."""
        super().__init__(rows)
        self.packed = pack_flows(rows)
        self.lane_columns = lane_columns or LANE_COLUMNS[rows.dtype]
        if prepack is None:
            bf16_pays = rows.channels >= PREPACK_MIN_CHANNELS and onednn_bf16()
            prepack = rows.device.type == "cpu" and (
                rows.dtype == torch.float32 or (rows.dtype == torch.bfloat16 and bf16_pays)
            )
        shapes = {tuple((layer.dilation, layer.padding) for layer in f.layers) for f in self.packed}
        if len(shapes) != 1:
            raise ValueError(f"the flows' layers differ in dilation or padding: {sorted(shapes)}")
        # zero columns between two items of a lane: no tap of one reaches the other
        self.gap = max(layer.padding for layer in self.packed[0].layers)
        if prepack:
            self._prepack()

    @property
    def lane_samples(self) -> int:
        """The samples a lane holds."""
        return self.lane_columns * self.rows.n_group

    def _prepack(self) -> None:
        for flow in self.packed:
            for layer in flow.layers:
                cond = onednn_prepack(layer.cond)
                taps = [[onednn_prepack(w) for w in phase] for phase in layer.taps]
                if cond is None or any(w is None for phase in taps for w in phase):
                    return  # this build cannot: the plain GEMMs run
                layer.prepacked = (cond, taps)

    def allocate_gemm(self, width: int) -> GemmBuffers:
        r = self.rows
        c, k, L = r.channels, r.kernel_size, r.n_layers
        dev, dt = r.device, r.dtype
        layers = self.packed[0].layers  # every flow has these dilations (checked)
        rings = [
            torch.zeros(width + 2 * layer.padding, k * c, device=dev, dtype=dt) for layer in layers
        ]
        hidden = torch.zeros(width, L, c + 1, device=dev, dtype=dt)
        hidden[..., -1] = 1.0
        hidden = hidden.view(width, L * (c + 1))
        return GemmBuffers(
            x=torch.zeros(r.n_group, width, device=dev, dtype=torch.float32),
            rings=rings,
            gate=torch.empty(width, 2 * c, device=dev, dtype=dt),
            hidden=hidden,
            tap_rows=[
                [ring[t * layer.dilation : t * layer.dilation + width] for t in range(k)]
                for ring, layer in zip(rings, layers, strict=True)
            ],
            slots=[
                [ring[layer.padding : layer.padding + width, s * c : (s + 1) * c] for s in range(k)]
                for ring, layer in zip(rings, layers, strict=True)
            ],
            hiddens=[hidden[:, l * (c + 1) : l * (c + 1) + c] for l in range(L)],
        )

    @torch.no_grad()
    def __call__(self, z: Tensor, cond: Tensor, lengths: list[int] | None = None) -> Tensor:
        """Audio `[B, T]` float32, zero beyond each item's length. The items run in lanes
        (`pack_lanes`): laid end to end, `gap` zero columns apart, the gaps masked as
        padding is, so each item's audio is what it gets alone (to float rounding)."""
        h = self.rows.n_group
        z_rows, _ = self.latent_rows(z, None)  # [B, h, T/h] float32
        batch, length = z.shape
        lengths = lengths or [length] * batch
        columns = [-(-n // h) for n in lengths]
        audio = torch.zeros(batch, length, device=self.rows.device, dtype=torch.float32)
        for lane in pack_lanes(columns, self.gap, self.lane_columns):
            last, start = lane[-1]
            width = start + columns[last]
            lane_z = z_rows.new_zeros(h, width)
            lane_cond = self.cond_columns(width)
            between = [
                column
                for (item, first), (_, following) in pairwise(lane)
                for column in range(first + columns[item], following)
            ]
            gaps = (
                torch.tensor(between, dtype=torch.long, device=self.rows.device)
                if between
                else None
            )
            for item, first in lane:
                n = columns[item]
                lane_z[:, first : first + n] = z_rows[item, :, :n]
                # each row's frames channels last: [n_mels, n*h] -> [h, n, n_mels]
                frames = cond[item, :, : n * h].unflatten(1, (n, h)).permute(2, 1, 0)
                lane_cond[:, first : first + n, : frames.shape[2]] = frames
            if gaps is not None:
                lane_cond.index_fill_(1, gaps, 0.0)
            x = self.run_gemm(self.allocate_gemm(width), lane_z, lane_cond, gaps)
            lane_audio = unsqueeze(x)
            for item, first in lane:
                audio[item, : lengths[item]] = lane_audio[first * h : first * h + lengths[item]]
        return audio

    def cond_columns(self, width: int) -> Tensor:
        """The conditioning rows of a lane, `[h, W, E]` in the network's dtype, to be filled:
        per column its n_mels frames (left unset), then a one (the bias input) and zeros."""
        r = self.rows
        n_mels = r.config.n_mels
        columns = torch.empty(
            r.n_group, width, extra_columns(n_mels), device=r.device, dtype=r.dtype
        )
        columns[..., n_mels] = 1.0
        columns[..., n_mels + 1 :] = 0.0
        return columns

    @staticmethod
    def _prepacked_preactivation(
        layer: PackedLayer, phase: int, tap_rows: list[Tensor], cond_row: Tensor
    ) -> Tensor:
        """The layer's pre-activation `[W, 2C]` on prepacked weights: oneDNN's linear, the
        running sum a fused addend. It returns a new tensor (there is no in-place form)."""
        cond, taps = layer.prepacked
        a = onednn_linear(cond_row, cond)
        for rows, weight in zip(tap_rows, taps[phase], strict=True):
            a = torch.ops.mkldnn._linear_pointwise.binary(rows, a, weight, None, "add")
        return a

    def run_gemm(
        self, buffers: GemmBuffers, z_rows: Tensor, cond_rows: Tensor, gaps: Tensor | None
    ) -> Tensor:
        """Invert all flows of one lane into `buffers.x` (returned): z_rows `[h, W]` float32,
        cond_rows `[h, W, E]` (`cond_columns`), gaps: the indices of the columns between
        items, or None."""
        r = self.rows
        c, k = r.channels, r.kernel_size
        x, gate, hidden = buffers.x, buffers.gate, buffers.hidden
        finish = r.elementwise.inverse
        gate_tanh, gate_sigmoid = gate[:, :c], gate[:, c:]
        x.copy_(z_rows)
        zeros = torch.zeros(x.shape[1], 1, device=x.device, dtype=r.dtype)
        if gaps is not None:  # what each layer's residual leaves in the gaps
            gap_fills = {
                id(layer): layer.res_fill.expand(len(gaps), c).contiguous()
                for flow in self.packed
                for layer in flow.layers
                if layer.res_fill is not None
            }
        for flow in reversed(self.packed):
            for ring, layer in zip(buffers.rings, flow.layers, strict=True):
                ring.copy_(layer.ring_fill.expand_as(ring))
            prev = zeros
            for i, row in enumerate(flow.order):
                phase = i % k
                torch.addcmul(flow.front_bias, prev, flow.front_weight, out=buffers.slots[0][phase])
                if gaps is not None:
                    buffers.slots[0][phase].index_fill_(0, gaps, 0.0)
                for l, layer in enumerate(flow.layers):
                    # a = conditioning and bias + every tap's rows of the ring @ its weights
                    if layer.prepacked is None:
                        torch.mm(cond_rows[row], layer.cond, out=gate)
                        for rows, weight in zip(
                            buffers.tap_rows[l], layer.taps[phase], strict=True
                        ):
                            gate.addmm_(rows, weight)
                        a, a_tanh, a_sigmoid = gate, gate_tanh, gate_sigmoid
                    else:
                        a = self._prepacked_preactivation(
                            layer, phase, buffers.tap_rows[l], cond_rows[row]
                        )
                        a_tanh, a_sigmoid = a[:, :c], a[:, c:]
                    # tanh(a1) * sigmoid(a2) = s2 - 2 s1 s2, s = sigmoid(a), a1 scaled by -2
                    a.sigmoid_()
                    hid = buffers.hiddens[l]
                    torch.addcmul(a_sigmoid, a_tanh, a_sigmoid, value=-2.0, out=hid)
                    if layer.res_weight is not None:  # g_{l+1} = g_l + res(hidden_l)
                        now, nxt = buffers.slots[l][phase], buffers.slots[l + 1][phase]
                        torch.addmm(now, hid, layer.res_weight, out=nxt)
                        if gaps is not None:
                            nxt.index_copy_(0, gaps, gap_fills[id(layer)])
                params = F.linear(hidden, flow.out_weight).t()[None]  # [1, P, W]
                x_row = finish(x[None, row], params)[0][0]
                x[row] = x_row
                prev = x_row.unsqueeze(-1).to(r.dtype)
        return x


__all__ = ["GemmRowInverse", "onednn_linear", "onednn_prepack", "pack_flows", "pack_lanes"]
