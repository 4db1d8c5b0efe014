"""The 2-D WaveNet of WaveFlow and NanoFlow: a density estimator causal over rows.

Data layout is `[B, C, h, W]`: height = the h rows of the squeezed waveform, width = its
T/h columns (on a CPU channels last in memory: `conv_layout`). The network maps the
(already shifted) input `[B, 1, h, W]` and the upsampled, squeezed mel `[B, n_mels, h, W]`
to a skip sum `[B, C, h, W]`; the model's final projection turns that into coupling
parameters. Pieces, in order (all convs weight-normed in training):

    front        1x1 conv, 1 -> C
    per layer l  dilated_conv  3x3 conv C -> 2C, causal over height (pads 2 rows on top only),
                               non-causal over width with dilation 2^l
                 cond_conv     1x1 conv n_mels -> 2C, added before the gate
                 tanh(a[:C]) * sigmoid(a[C:])
                 res_skip_conv 1x1 conv C -> 2C: residual half (added to the layer input)
                               and skip half (summed over layers); the last layer of a stack
                               has only the skip half (C outputs)

Output row i depends on input rows <= i only, so with the one-row shift done by the coupling
the transform of row i sees rows < i. The conditioning projections do not depend on the
signal: `project_conditioning` computes them once per utterance (NanoFlow reuses them for
every flow; an incremental engine can cache them).

Only the dilated convs mix columns. For a zero-padded batch of utterances an optional column
`mask` `[B, 1, 1, W]` (1 on an utterance's own columns, 0 on its padding) zeroes the hidden
state's padding before each layer, which is what the conv's own zero padding gives at the
end of an utterance on its own; every other op is per column.

Where NanoFlow's flow indication enters (a `Modulation` passed per flow, never stored here):
- `front`: a C-vector added to the front conv output (the concatenative embedding, eq. 8:
  concatenating a constant e^k to the input of a 1x1 conv adds a constant W e^k).
- `bias[l]`: a 2C-vector added with the conditioning before the gate (additive bias, eq. 9).
- `gate[l]`: a C-vector multiplying the gated activation tanh * sigmoid, i.e. the layer's
  hidden state before res_skip_conv (multiplicative gating, eq. 10, as the appendix reads
  it, already exponentiated). It scales both the residual and the skip contribution.
- `residual_gate[l]`: a C-vector multiplying the residual half of res_skip_conv's output
  only (the skip is not gated): multiplicative gating as the NanoFlow reference code
  computes it (`h + res * multgate`, a raw multiplier). The last layer has no residual, so
  its row is never read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vocoder.nets.gated import Modulation, channel_vector, gated_residual_skip


def conv_layout(x: Tensor) -> Tensor:
    """`x` `[B, C, h, W]` channels last on a CPU, as is elsewhere: oneDNN runs the 2-D convs
    and their gradients faster so (CPU training 1.35-1.5x in bf16, up to 1.2x in fp32:
    bench/train_speed.py), and the convs, pads and gates keep the layout once the front
    conv's output and the mel have it.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class GatedLayer2D(nn.Module):
    """One gated residual block, causal over height, dilated over width."""

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        width_dilation: int,
        kernel_size: int = 3,
        has_residual: bool = True,
    ):
        super().__init__()
        self.channels = channels
        self.has_residual = has_residual
        self.width_dilation = width_dilation
        self.kernel_size = kernel_size
        self.dilated_conv = weight_norm(
            nn.Conv2d(channels, 2 * channels, kernel_size, dilation=(1, width_dilation))
        )
        self.cond_conv = weight_norm(nn.Conv2d(cond_channels, 2 * channels, 1))
        out = 2 * channels if has_residual else channels
        self.res_skip_conv = weight_norm(nn.Conv2d(channels, out, 1))

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """F.pad amounts (left, right, top, bottom): causal over height, centred over width."""
        side = (self.kernel_size - 1) * self.width_dilation // 2
        return (side, side, self.kernel_size - 1, 0)

    def forward(
        self,
        h: Tensor,
        cond_proj: Tensor,
        bias: Tensor | None = None,
        gate: Tensor | None = None,
        mask: Tensor | None = None,
        residual_gate: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        """`(next residual input or None for a last layer, skip contribution)`.

        `mask` `[B, 1, 1, W]`: zero the padding columns of `h` first (see the module docstring).
        """
        if mask is not None:  # where, not *: inf * 0 in the padding would be NaN
            h = torch.where(mask > 0, h, 0.0)
        a = self.dilated_conv(F.pad(h, self.padding)) + cond_proj
        return gated_residual_skip(
            h, a, self.res_skip_conv, self.has_residual, bias, gate, residual_gate
        )


class WaveNet2D(nn.Module):
    """A stack of `GatedLayer2D` with a front conv; see the module docstring.

    `first_layer` offsets the width dilations (layer l of the whole network has dilation
    2^l), `has_front=False` and `ends_stack=False` let a network be split into a bottom
    and a top part (NanoFlow's partial sharing): the bottom has the front conv and keeps the
    residual of its last layer, the top continues from there.
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        n_layers: int,
        kernel_size: int = 3,
        in_channels: int = 1,
        first_layer: int = 0,
        has_front: bool = True,
        ends_stack: bool = True,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.front = weight_norm(nn.Conv2d(in_channels, channels, 1)) if has_front else None
        self.layers = nn.ModuleList(
            GatedLayer2D(
                channels,
                cond_channels,
                width_dilation=2 ** (first_layer + i),
                kernel_size=kernel_size,
                has_residual=not (ends_stack and i == n_layers - 1),
            )
            for i in range(n_layers)
        )

    def project_conditioning(self, cond: Tensor) -> list[Tensor]:
        """`[B, n_mels, h, W]` -> one `[B, 2C, h, W]` projection per layer."""
        cond = conv_layout(cond)
        return [layer.cond_conv(cond) for layer in self.layers]

    def run_layers(
        self,
        h: Tensor,
        cond_proj: list[Tensor],
        modulation: Modulation | None = None,
        skip: Tensor | float = 0.0,
        mask: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        """Run the layers on hidden state `h` `[B, C, h, W]`; returns `(h, skip + skips)`.

        `mask` `[B, 1, 1, W]`: the column mask of a padded batch (see the module docstring).
        """
        mod = modulation or Modulation()
        for i, layer in enumerate(self.layers):
            bias, gate, residual_gate = mod.layer(i)
            h, s = layer(h, cond_proj[i], bias, gate, mask, residual_gate)
            skip = skip + s
        return h, skip

    def embed(self, x: Tensor, modulation: Modulation | None = None) -> Tensor:
        """The front conv: input `[B, in_channels, h, W]` -> hidden state `[B, C, h, W]`."""
        h = conv_layout(self.front(x))
        if modulation is not None and modulation.front is not None:
            h = h + channel_vector(modulation.front, h)
        return h

    def forward(
        self,
        x: Tensor,
        cond_proj: list[Tensor],
        modulation: Modulation | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Input `[B, in_channels, h, W]` and per-layer projections -> skip sum `[B, C, h, W]`."""
        _, skip = self.run_layers(self.embed(x, modulation), cond_proj, modulation, mask=mask)
        return skip


__all__ = ["conv_layout", "GatedLayer2D", "WaveNet2D"]
