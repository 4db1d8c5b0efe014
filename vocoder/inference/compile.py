"""Compile a trained flow vocoder into its inference model.

`prepare_for_inference(model, precision, device)` starts from `model.to_inference_form()`
(weight norm folded, NanoFlow's flow indication embedding replaced by cached per-flow
vectors: that logic lives in `vocoder.models`) and adds what only synthesis needs:

- Row families (WaveFlow, NanoFlow): a `RowFlows` description of every flow as row-step
  weights for `vocoder.inference.incremental`:
  - each layer's 3x3 conv as a 1-D conv over a stack of the last 3 rows (kernel-size
    rotations, so a ring buffer of rows needs no shifting);
  - per (flow, layer) one bias vector: conv bias + conditioning conv bias + NanoFlow's
    cached additive bias W^l e^k;
  - NanoFlow's cached gates folded into that flow's weights. The appendix's gate
    exp(delta^{k,l}) on the hidden state goes into the residual weights and, through the
    skip path, into the final projection: the skip sum is linear, so
    `projection(sum_l S_l (g_l * hidden_l))` is one 1x1 conv over the stacked hidden states
    with weights `[P S_0 diag(g_0), ..., P S_{L-1} diag(g_{L-1})]`. The reference code's
    gate on the residual branch scales the rows of the residual weights and bias;
  - the conditioning convs of all layers stacked into one matrix, so the mel conditioning
    of every layer is one matrix product per utterance. Layers that several flows share
    (NanoFlow) form the "shared" group, computed once for all flows; a flow's own layers
    (WaveFlow, NanoFlow's unshared top layers) are projected when that flow starts.
  Folding runs in float64, then weights are cast to the precision.
- Glow families (WaveGlow, NanoFlow-Glow): no row recursion; the inference form itself,
  whose inverse is already parallel (its conditioning projections are computed once per
  utterance by the model). Half precision runs it under autocast.

Precision: "fp32", "fp16" or "bf16" applies to the network (convs, hidden states,
conditioning projections, each flow's final projection). The numerically sensitive parts
stay float32: the mel upsampler, the audio itself (z, every flow's rows), the affine or
spline inverse (its parameters, the final projection's output, are cast to float32 by the
map itself: `vocoder.flows.base.full_precision`), and WaveGlow's invertible 1x1
convolutions.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vocoder.devices import resolve_device
from vocoder.errors import ConfigError
from vocoder.flows.coupling import Elementwise
from vocoder.models.base import FlowVocoder
from vocoder.models.config import ModelConfig
from vocoder.models.nanoflow import NanoFlow
from vocoder.models.waveflow import WaveFlow
from vocoder.nets.gated import Modulation
from vocoder.nets.wavenet2d import GatedLayer2D
from vocoder.precision import DTYPES


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name ("fp32", "fp16", "bf16")."""
    if precision not in DTYPES:
        raise ConfigError(f"unknown precision {precision!r}; use {', '.join(DTYPES)}")
    return DTYPES[precision]


@dataclass
class RowLayerStep:
    """One gated layer of one flow, as the row-step engine runs it."""

    conv_weights: Tensor  # [k, 2C, k*C, k]: one rotation per ring position (shared by flows)
    conv_bias: Tensor  # [2C]: conv + conditioning + NanoFlow additive bias of this flow
    dilation: int
    padding: int
    res_weight: Tensor | None  # [C, C, 1] residual half, gate folded in; None: last layer
    res_bias: Tensor | None  # [C]
    shared: bool  # its conditioning projection is in the shared group (else the flow's own)
    proj_start: int  # first of its 2C channels in that group's projection


@dataclass
class RowFlowStep:
    """One flow of a row family: row order, front conv, layers and the folded projection."""

    order: list[int]  # rows in the order this flow produces them (original positions)
    front_weight: Tensor  # [1, C, 1]
    front_bias: Tensor  # [1, C, 1]: bias + NanoFlow's concatenated-embedding bias
    layers: list[RowLayerStep]
    out_weight: Tensor  # [P, L*C, 1]: projection of the stacked hidden states
    out_bias: Tensor  # [P]
    cond_weight: Tensor | None  # [n*2C, n_mels]: the conditioning convs of its own layers


@dataclass
class RowFlows:
    """Everything the row-step engine needs; all tensors on one device."""

    config: ModelConfig
    flows: list[RowFlowStep]
    shared_cond_weight: Tensor | None  # [n*2C, n_mels]: conditioning convs shared by flows
    elementwise: Elementwise  # float32 math
    dtype: torch.dtype
    device: torch.device

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def kernel_size(self) -> int:
        return self.config.kernel_size

    @property
    def n_group(self) -> int:
        return self.config.n_group

    @staticmethod
    def project(weight: Tensor | None, cond_rows: Tensor) -> Tensor | None:
        """Conditioning projections `[n*2C, h, B, W]` of `cond_rows` `[n_mels, h, B, W]`:
        one matrix product for every layer, row and batch item."""
        if weight is None:
            return None
        flat = torch.mm(weight, cond_rows.reshape(cond_rows.shape[0], -1))
        return flat.view(weight.shape[0], *cond_rows.shape[1:])

    def bytes_per_column(self, batch: int = 1) -> int:
        """Working memory per column of the squeezed signal (an estimate, for chunk sizes)."""
        c, h, L, k = self.channels, self.n_group, self.n_layers, self.kernel_size
        n_mels = self.config.n_mels
        item = torch.empty((), dtype=self.dtype).element_size()
        shared = 0 if self.shared_cond_weight is None else self.shared_cond_weight.shape[0]
        own = max(
            (f.cond_weight.shape[0] for f in self.flows if f.cond_weight is not None), default=0
        )
        network = h * (shared + own + n_mels) + L * k * c + L * c + 8 * c
        # float32: z, audio, and the upsampled conditioning (upsampler output with its
        # polyphase neighbours, batch, rows, the CPU engine's samples-major copy)
        float32 = 4 * h + 4 * n_mels * h
        return batch * (network * item + 4 * float32)


class InferenceModel:
    """A flow vocoder prepared for synthesis on one device in one precision.

    `upsample` gives the float32 conditioning; row families carry `rows` for the
    incremental engine, Glow families `glow` (the inference-form model). Build it with
    `prepare_for_inference`.
    """

    def __init__(
        self,
        config: ModelConfig,
        upsampler: nn.Module,
        precision: str,
        device: torch.device,
        parameter_count: int,
        rows: RowFlows | None = None,
        glow: FlowVocoder | None = None,
    ):
        self.config = config
        self.upsampler = upsampler
        self.precision = precision
        self.dtype = precision_dtype(precision)
        self.device = device
        self.parameter_count = parameter_count
        self.rows = rows
        self.glow = glow

    @torch.no_grad()
    def upsample(self, mel: Tensor) -> Tensor:
        """Log-mel `[B, n_mels, F]` -> float32 conditioning `[B, n_mels, F * hop_length]`."""
        cond = self.upsampler(mel.to(self.device, torch.float32))
        return cond[..., : mel.shape[-1] * self.config.hop_length]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast region the Glow families run in (autocast off in fp32, whatever
        region the caller is in)."""
        if self.dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)


def prepare_for_inference(
    model: FlowVocoder, precision: str = "fp32", device: str | torch.device = "auto"
) -> InferenceModel:
    """Compile `model` (training or inference form) for synthesis; see the module docstring."""
    dtype = precision_dtype(precision)
    device = resolve_device(device)
    # a private copy: moving or casting it must not touch the caller's model
    source = copy.deepcopy(model) if model.inference_form else model.to_inference_form()
    source = source.float().eval()
    count = source.parameter_count()
    if isinstance(source, WaveFlow):
        rows = build_row_flows(source, dtype, device)
        upsampler = source.upsampler.to(device)
        return InferenceModel(source.config, upsampler, precision, device, count, rows=rows)
    glow = source.to(device)
    return InferenceModel(source.config, glow.upsampler, precision, device, count, glow=glow)


def _flow_parts(
    model: WaveFlow, k: int
) -> tuple[nn.Conv2d, list[GatedLayer2D], Modulation, nn.Conv2d]:
    """Flow k's front conv, gated layers (bottom to top), modulation and projection."""
    if isinstance(model, NanoFlow):
        layers = list(model.net.layers)
        if model.top_nets is not None:
            layers += list(model.top_nets[k].layers)
        projection = model.projections[k if len(model.projections) > 1 else 0]
        return model.net.front, layers, model.modulation(k) or Modulation(), projection
    net = model.nets[k]
    return net.front, list(net.layers), Modulation(), model.projections[k]


def _rotations(weight: Tensor) -> Tensor:
    """`[2C, C, k, k]` conv weight -> `[k, 2C, k*C, k]`: one 1-D conv weight per ring phase.

    Row i of a flow is stored in ring slot i % k. At step i, slot s holds row
    i - ((i - s) mod k), which meets kernel row k - 1 - ((i - s) mod k) (the causal conv pads
    k - 1 rows on top, so kernel row k - 1 meets the current row).
    """
    k = weight.shape[2]
    phases = []
    for i in range(k):
        blocks = [weight[:, :, k - 1 - ((i - s) % k), :] for s in range(k)]
        phases.append(torch.cat(blocks, dim=1))
    return torch.stack(phases)


def _vector(t: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if t is None else t.detach().double()


@torch.no_grad()
def build_row_flows(model: WaveFlow, dtype: torch.dtype, device: torch.device) -> RowFlows:
    """Row-step weights of an inference-form WaveFlow/NanoFlow; see the module docstring."""
    if not model.inference_form:
        raise ConfigError("build_row_flows needs the inference form (model.to_inference_form())")
    c = model.config
    C, K = c.channels, c.n_flows

    def put(t: Tensor, float32: bool = False) -> Tensor:
        return t.to(device=device, dtype=torch.float32 if float32 else dtype).contiguous()

    parts = [_flow_parts(model, k) for k in range(K)]
    users: dict[int, int] = {}
    for _, layers, _, _ in parts:
        for layer in layers:
            users[id(layer)] = users.get(id(layer), 0) + 1

    # conditioning groups: the shared one, then each flow's own layers
    shared_index: dict[int, int] = {}
    shared_weights: list[Tensor] = []
    rotations: dict[int, Tensor] = {}
    flows: list[RowFlowStep] = []
    for k, (front, layers, mod, projection) in enumerate(parts):
        own_weights: list[Tensor] = []
        steps: list[RowLayerStep] = []
        out_blocks: list[Tensor] = []
        p_weight = projection.weight.detach().double()[:, :, 0, 0]  # [P, C]
        skip_bias = torch.zeros(C, dtype=torch.float64)
        for l, layer in enumerate(layers):
            cond_w = layer.cond_conv.weight.detach().double()[:, :, 0, 0]  # [2C, n_mels]
            shared = users[id(layer)] > 1
            if shared:
                if id(layer) not in shared_index:
                    shared_index[id(layer)] = len(shared_weights) * 2 * C
                    shared_weights.append(cond_w)
                proj_start = shared_index[id(layer)]
            else:
                proj_start = len(own_weights) * 2 * C
                own_weights.append(cond_w)
            if id(layer) not in rotations:
                rotations[id(layer)] = put(_rotations(layer.dilated_conv.weight.detach().double()))
            bias = (
                layer.dilated_conv.bias.detach().double() + layer.cond_conv.bias.detach().double()
            )
            if mod.bias is not None:
                bias = bias + mod.bias[l].detach().double()
            gate = None if mod.gate is None else mod.gate[l].detach().double()
            rs_w = layer.res_skip_conv.weight.detach().double()[:, :, 0, 0]  # [out, C]
            rs_b = layer.res_skip_conv.bias.detach().double()
            if gate is not None:
                rs_w = rs_w * gate[None, :]
            if layer.has_residual:
                res_w, res_b = rs_w[:C], rs_b[:C]
                skip_w, skip_b = rs_w[C:], rs_b[C:]
                if mod.residual_gate is not None:
                    residual_gate = mod.residual_gate[l].detach().double()
                    res_w, res_b = res_w * residual_gate[:, None], res_b * residual_gate
            else:
                res_w = res_b = None
                skip_w, skip_b = rs_w, rs_b
            out_blocks.append(p_weight @ skip_w)
            skip_bias = skip_bias + skip_b
            steps.append(
                RowLayerStep(
                    conv_weights=rotations[id(layer)],
                    conv_bias=put(bias),
                    dilation=layer.width_dilation,
                    padding=layer.padding[0],
                    res_weight=None if res_w is None else put(res_w[:, :, None]),
                    res_bias=None if res_b is None else put(res_b),
                    shared=shared,
                    proj_start=proj_start,
                )
            )
        front_bias = front.bias.detach().double() + _vector(mod.front, front.bias.double())
        out_bias = p_weight @ skip_bias + projection.bias.detach().double()
        flows.append(
            RowFlowStep(
                order=[int(r) for r in model.row_orders[k].tolist()],
                front_weight=put(front.weight.detach()[:, 0, 0, 0].reshape(1, C, 1)),
                front_bias=put(front_bias.reshape(1, C, 1)),
                layers=steps,
                out_weight=put(torch.cat(out_blocks, dim=1)[:, :, None]),
                out_bias=put(out_bias),
                cond_weight=put(torch.cat(own_weights)) if own_weights else None,
            )
        )
    return RowFlows(
        config=c,
        flows=flows,
        shared_cond_weight=put(torch.cat(shared_weights)) if shared_weights else None,
        elementwise=model.coupling.elementwise.to(device),
        dtype=dtype,
        device=device,
    )


__all__ = [
    "InferenceModel",
    "RowFlows",
    "RowFlowStep",
    "RowLayerStep",
    "build_row_flows",
    "precision_dtype",
    "prepare_for_inference",
]
