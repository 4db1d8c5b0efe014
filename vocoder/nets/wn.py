"""WaveGlow's WN: a non-causal 1-D WaveNet over `[B, C, T/g]` (T/g groups of g samples).

    start        1x1 conv, in_channels -> C (optional: NanoFlow-Glow keeps per-flow ones)
    per layer l  in_conv       conv C -> 2C, kernel 3, dilation 2^l, centred
                 cond_conv     1x1 conv (n_mels * g) -> 2C, added before the gate
                 tanh(a[:C]) * sigmoid(a[C:])
                 res_skip_conv 1x1 conv C -> 2C (the last layer: C, skip only)

All convs are weight-normed in training. The output is the skip sum `[B, C, T/g]`; the final
zero-initialised projection belongs to the model. NVIDIA's code has one cond conv producing
all layers' 2C channels at once; one per layer has the same parameters and outputs.
A `Modulation` (see `wavenet2d`) enters the same way as in the 2-D WaveNet.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vocoder.nets.gated import Modulation, channel_vector, gated_residual_skip


class GatedLayer1D(nn.Module):
    """One gated residual block of WN."""

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        dilation: int,
        kernel_size: int = 3,
        has_residual: bool = True,
    ):
        super().__init__()
        self.channels = channels
        self.has_residual = has_residual
        padding = dilation * (kernel_size - 1) // 2
        self.in_conv = weight_norm(
            nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation, padding=padding)
        )
        self.cond_conv = weight_norm(nn.Conv1d(cond_channels, 2 * channels, 1))
        out = 2 * channels if has_residual else channels
        self.res_skip_conv = weight_norm(nn.Conv1d(channels, out, 1))

    def forward(
        self,
        h: Tensor,
        cond_proj: Tensor,
        bias: Tensor | None = None,
        gate: Tensor | None = None,
        residual_gate: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        a = self.in_conv(h) + cond_proj
        return gated_residual_skip(
            h, a, self.res_skip_conv, self.has_residual, bias, gate, residual_gate
        )


class WN(nn.Module):
    """Start conv (if `in_channels`) and `n_layers` gated layers; returns the skip sum."""

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        n_layers: int,
        kernel_size: int = 3,
        in_channels: int | None = None,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.start = weight_norm(nn.Conv1d(in_channels, channels, 1)) if in_channels else None
        self.layers = nn.ModuleList(
            GatedLayer1D(channels, cond_channels, 2**i, kernel_size, i < n_layers - 1)
            for i in range(n_layers)
        )

    def project_conditioning(self, cond: Tensor) -> list[Tensor]:
        """`[B, cond_channels, T/g]` -> one `[B, 2C, T/g]` projection per layer."""
        return [layer.cond_conv(cond) for layer in self.layers]

    def run_layers(
        self, h: Tensor, cond_proj: list[Tensor], modulation: Modulation | None = None
    ) -> Tensor:
        """Hidden state `[B, C, T/g]` (after a start conv) -> skip sum `[B, C, T/g]`."""
        mod = modulation or Modulation()
        if mod.front is not None:
            h = h + channel_vector(mod.front, h)
        skip: Tensor | float = 0.0
        for i, layer in enumerate(self.layers):
            h, s = layer(h, cond_proj[i], *mod.layer(i))
            skip = skip + s
        return skip

    def forward(
        self, x: Tensor, cond_proj: list[Tensor], modulation: Modulation | None = None
    ) -> Tensor:
        """Input `[B, in_channels, T/g]` -> skip sum `[B, C, T/g]` (needs a start conv)."""
        return self.run_layers(self.start(x), cond_proj, modulation)


__all__ = ["GatedLayer1D", "WN"]
