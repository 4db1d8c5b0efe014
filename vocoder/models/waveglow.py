"""WaveGlow (Prenger et al., 2019) and its NanoFlow counterpart.

Audio `[B, T]` is folded into groups of g samples, `[B, g, T/g]` (the same column-major
squeeze as WaveFlow's), the upsampled mel into `[B, n_mels * g, T/g]`. Each of the K flows
applies an invertible 1x1 conv over the channels, then a `ChannelCoupling` whose first half
of the channels drives a WN (1-D WaveNet) and a zero-initialised 1x1 projection. Before
every `n_early_every`-th flow, `n_early_size` channels leave as part of z ("early outputs"),
so later flows work on fewer channels (8, 6, 4 in NVIDIA's default). z is the concatenation
[early outputs..., last flow's output] along channels, unfolded back to `[B, T]`.

NanoFlow-Glow shares one WN (its gated layers and conditioning convs) across all flows.
Because the coupling's input width changes after early outputs, the start conv (half the
channels -> C) is per flow; the projection is per flow too (decomp, full). Under "naive"
sharing the start conv and projection are shared among flows of equal width. The flow
indication embedding modulates the WN as in NanoFlow (additive bias and gate by default; the
appendix used concatenation and gating for Glow, available via `concat_embedding`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vocoder.flows.coupling import ChannelCoupling
from vocoder.flows.invconv import InvertibleConv1x1
from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.models.base import FlowVocoder, ReceptiveField, elementwise_for, network_reach
from vocoder.models.config import ModelConfig
from vocoder.models.flow_indication import CachedFlowIndication, FlowIndication
from vocoder.nets.gated import Modulation
from vocoder.nets.upsample import MelUpsampler1D
from vocoder.nets.wn import WN


def zero_projection_1d(channels: int, outputs: int) -> nn.Conv1d:
    """WN's final 1x1 conv, zero-initialised so every coupling starts as the identity."""
    conv = nn.Conv1d(channels, outputs, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class WaveGlow(FlowVocoder):
    """Glow over groups of samples, each flow with its own WN; see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.widths = config.glow_channel_schedule()
        self.upsampler = MelUpsampler1D(config.n_mels, config.hop_length)
        self.coupling = ChannelCoupling(elementwise_for(config))
        self.invconvs = nn.ModuleList(InvertibleConv1x1(w) for w in self.widths)
        self._build_networks()

    @property
    def cond_channels(self) -> int:
        return self.config.n_mels * self.config.n_group

    def _outputs(self, width: int) -> int:
        """Projection outputs for a coupling over `width` channels."""
        return self.coupling.elementwise.params_per_element * (width - width // 2)

    def _build_networks(self) -> None:
        c = self.config
        self.nets = nn.ModuleList(
            WN(c.channels, self.cond_channels, c.n_layers, c.kernel_size, in_channels=w // 2)
            for w in self.widths
        )
        self.projections = nn.ModuleList(
            zero_projection_1d(c.channels, self._outputs(w)) for w in self.widths
        )

    def prepare_conditioning(self, cond: Tensor):
        """Signal-independent work done once per utterance; here the grouped mel."""
        return cond

    def flow_conditioner(self, k: int, prepared) -> Callable[[Tensor], Tensor]:
        """Flow k's map from the coupling's first half `[B, w/2, T/g]` to its parameters."""
        net, projection = self.nets[k], self.projections[k]
        cond_proj = net.project_conditioning(prepared)
        return lambda x: projection(net(x, cond_proj))

    def _is_early(self, k: int) -> bool:
        every = self.config.n_early_every
        return bool(every) and k > 0 and k % every == 0

    def upsample(self, mel: Tensor) -> Tensor:
        return self.upsampler(mel)

    def _group(self, cond: Tensor) -> Tensor:
        """`[B, n_mels, T]` -> `[B, n_mels * g, T/g]` (channel m * g + j: mel m, sample j)."""
        grouped = squeeze(cond, self.config.n_group)
        return grouped.reshape(cond.shape[0], self.cond_channels, grouped.shape[-1])

    def _forward_flows(self, audio: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        x = squeeze(audio, self.config.n_group)
        prepared = self.prepare_conditioning(self._group(cond))
        early: list[Tensor] = []
        logdet = audio.new_zeros(audio.shape[0])
        for k in range(self.config.n_flows):
            if self._is_early(k):
                size = self.config.n_early_size
                early.append(x[:, :size])
                x = x[:, size:]
            x, mix_logdet = self.invconvs[k](x)
            x, coupling_logdet = self.coupling(x, self.flow_conditioner(k, prepared))
            logdet = logdet + mix_logdet + coupling_logdet
        return unsqueeze(torch.cat([*early, x], dim=1)), logdet

    def _inverse_flows(self, z: Tensor, cond: Tensor) -> Tensor:
        z = squeeze(z, self.config.n_group)
        prepared = self.prepare_conditioning(self._group(cond))
        start = self.config.n_group - self.widths[-1]
        x = z[:, start:]
        for k in reversed(range(self.config.n_flows)):
            x, _ = self.coupling.inverse(x, self.flow_conditioner(k, prepared))
            x, _ = self.invconvs[k].inverse(x)
            if self._is_early(k):
                start -= self.config.n_early_size
                x = torch.cat([z[:, start : start + self.config.n_early_size], x], dim=1)
        return unsqueeze(x)

    def receptive_field(self) -> ReceptiveField:
        c = self.config
        columns = 1 + 2 * network_reach(c)
        return ReceptiveField(0, columns, c.n_group * (c.n_flows * (columns - 1) + 1))


class NanoFlowGlow(WaveGlow):
    """WaveGlow with one WN shared by all flows; see the module docstring."""

    def _build_networks(self) -> None:
        c = self.config
        self.net = WN(c.channels, self.cond_channels, c.n_layers, c.kernel_size)
        if c.sharing == "naive":
            distinct = sorted(set(self.widths), reverse=True)
            self.slots = [distinct.index(w) for w in self.widths]
            slot_widths = distinct
        else:
            self.slots = list(range(c.n_flows))
            slot_widths = self.widths
        self.starts = nn.ModuleList(
            weight_norm(nn.Conv1d(w // 2, c.channels, 1)) for w in slot_widths
        )
        self.projections = nn.ModuleList(
            zero_projection_1d(c.channels, self._outputs(w)) for w in slot_widths
        )
        self.flow_indication: FlowIndication | CachedFlowIndication | None = None
        if c.sharing == "full":
            self.flow_indication = FlowIndication.from_config(c)

    def modulation(self, k: int) -> Modulation | None:
        return None if self.flow_indication is None else self.flow_indication(k)

    def prepare_conditioning(self, cond: Tensor):
        """The shared WN's conditioning projections, computed once for all flows."""
        return self.net.project_conditioning(cond)

    def flow_conditioner(self, k: int, prepared) -> Callable[[Tensor], Tensor]:
        start, projection = self.starts[self.slots[k]], self.projections[self.slots[k]]
        mod = self.modulation(k)
        return lambda x: projection(self.net.run_layers(start(x), prepared, mod))

    def _cache_flow_embedding(self) -> None:
        if isinstance(self.flow_indication, FlowIndication):
            self.flow_indication = self.flow_indication.cached()


__all__ = ["WaveGlow", "NanoFlowGlow"]
