"""WaveFlow (Ping et al., 2020): row-autoregressive affine (or spline) flows over a squeeze.

The waveform `[B, T]` is squeezed to `[B, h, T/h]` (each column = h consecutive samples) and
the upsampled mel to `[B, n_mels, h, T/h]`. Flow k sees the rows in its own order
(`row_orders[k]`: reversed every other flow, or "bipartized") and applies a
`RowAutoregressiveCoupling` whose parameters come from its 2-D WaveNet and a zero-initialised
1x1 projection. Working in the original row positions and indexing rows per flow is the same
as flipping the signal and conditioning between flows.

Subclasses (NanoFlow) change only which network serves each flow: `prepare_conditioning`
(once per utterance) and `flow_conditioner` (per flow).

In a padded batch (`log_prob` with `lengths`) a column mask keeps the padding out: the 2-D
WaveNets zero it before each dilated conv (the only op that mixes columns), and its
log-determinants are left out of the sum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vocoder.flows.coupling import RowAutoregressiveCoupling
from vocoder.flows.permutations import permute_rows, row_orders
from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.models.base import FlowVocoder, ReceptiveField, elementwise_for, network_reach
from vocoder.models.config import ModelConfig
from vocoder.nets.upsample import MelUpsampler2D
from vocoder.nets.wavenet2d import WaveNet2D, conv_layout


def zero_projection(channels: int, outputs: int) -> nn.Conv2d:
    """The final 1x1 conv, zero-initialised so every flow starts as the identity."""
    conv = nn.Conv2d(channels, outputs, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class WaveFlow(FlowVocoder):
    """K flows, each with its own 2-D WaveNet and projection; one shared mel upsampler."""

    masks_padding = True

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.upsampler = MelUpsampler2D(config.strides)
        self.coupling = RowAutoregressiveCoupling(elementwise_for(config))
        orders = row_orders(
            config.permutation, config.n_group, config.n_flows, config.permute_first_flow
        )
        self.register_buffer("row_orders", orders, persistent=False)
        self.register_buffer("inverse_row_orders", torch.argsort(orders, dim=1), persistent=False)
        self._build_networks()

    @property
    def params_per_element(self) -> int:
        return self.coupling.elementwise.params_per_element

    def _new_net(self, n_layers: int | None = None, **kwargs) -> WaveNet2D:
        c = self.config
        n_layers = c.n_layers if n_layers is None else n_layers
        return WaveNet2D(c.channels, c.n_mels, n_layers, c.kernel_size, **kwargs)

    def _build_networks(self) -> None:
        c = self.config
        self.nets = nn.ModuleList(self._new_net() for _ in range(c.n_flows))
        self.projections = nn.ModuleList(
            zero_projection(c.channels, self.params_per_element) for _ in range(c.n_flows)
        )

    def prepare_conditioning(self, cond: Tensor):
        """Signal-independent work done once per utterance; here just the squeezed mel, in
        the layout the networks' convs take (`conv_layout`), converted once for all flows."""
        return conv_layout(cond)

    def flow_conditioner(
        self, k: int, prepared, mask: Tensor | None = None
    ) -> Callable[[Tensor], Tensor]:
        """Flow k's map from the shifted input `[B, 1, h, W]` to params `[B, P, h, W]`.

        `mask` `[B, 1, 1, W]`: a padded batch's column mask, for the 2-D WaveNet.
        """
        net, projection = self.nets[k], self.projections[k]
        cond_proj = net.project_conditioning(permute_rows(prepared, self.row_orders[k]))
        return lambda x: projection(net(x, cond_proj, mask=mask))

    def upsample(self, mel: Tensor) -> Tensor:
        return self.upsampler(mel)

    def _forward_flows(
        self, audio: Tensor, cond: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        h = self.config.n_group
        x = squeeze(audio, h)
        prepared = self.prepare_conditioning(squeeze(cond, h))
        net_mask = None if mask is None else mask[:, None, None, :]
        logdet = audio.new_zeros(audio.shape[0])
        for k in range(self.config.n_flows):
            conditioner = self.flow_conditioner(k, prepared, net_mask)
            y, flow_logdet = self.coupling(permute_rows(x, self.row_orders[k]), conditioner, mask)
            x = permute_rows(y, self.inverse_row_orders[k])
            logdet = logdet + flow_logdet
        return unsqueeze(x), logdet

    def _inverse_flows(self, z: Tensor, cond: Tensor) -> Tensor:
        h = self.config.n_group
        y = squeeze(z, h)
        prepared = self.prepare_conditioning(squeeze(cond, h))
        for k in reversed(range(self.config.n_flows)):
            conditioner = self.flow_conditioner(k, prepared)
            x, _ = self.coupling.inverse(permute_rows(y, self.row_orders[k]), conditioner)
            y = permute_rows(x, self.inverse_row_orders[k])
        return unsqueeze(y)

    def receptive_field(self) -> ReceptiveField:
        c = self.config
        columns = 1 + 2 * network_reach(c)
        rows = min(c.n_group - 1, 1 + (c.kernel_size - 1) * c.n_layers)
        return ReceptiveField(rows, columns, c.n_group * (c.n_flows * (columns - 1) + 1))


__all__ = ["WaveFlow", "zero_projection"]
