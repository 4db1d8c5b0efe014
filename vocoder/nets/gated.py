"""The pieces the 2-D WaveNet (WaveFlow, NanoFlow) and WN (WaveGlow) share: the per-flow
`Modulation` a shared network takes (NanoFlow's flow indication; where each vector enters is
in vocoder/nets/wavenet2d.py's docstring) and the gated residual/skip unit of a layer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class Modulation(NamedTuple):
    """Per-flow vectors a shared network is modulated with; any of them may be None."""

    front: Tensor | None = None  # [C]
    bias: Tensor | None = None  # [n_layers, 2C]
    gate: Tensor | None = None  # [n_layers, C]
    residual_gate: Tensor | None = None  # [n_layers, C]

    def layers(self, start: int, stop: int) -> Modulation:
        """The same modulation restricted to layers `start:stop` (front kept only at 0)."""

        def part(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[start:stop]

        return Modulation(
            self.front if start == 0 else None,
            part(self.bias),
            part(self.gate),
            part(self.residual_gate),
        )

    def layer(self, i: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """`(bias, gate, residual_gate)` of layer i, each None when absent."""

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[i]

        return pick(self.bias), pick(self.gate), pick(self.residual_gate)


def channel_vector(v: Tensor, like: Tensor) -> Tensor:
    """`[C]` -> `[1, C, 1, ...]` for broadcasting over `like` (`[B, C, ...]`)."""
    return v.reshape(1, -1, *([1] * (like.dim() - 2)))


def gated_residual_skip(
    h: Tensor,
    a: Tensor,
    res_skip_conv: nn.Module,
    has_residual: bool,
    bias: Tensor | None,
    gate: Tensor | None,
    residual_gate: Tensor | None = None,
) -> tuple[Tensor | None, Tensor]:
    """The gated unit of a WaveNet layer, 1-D or 2-D, with NanoFlow's optional modulation.

    `a` (`[B, 2C, ...]`, the layer's pre-activation from `h` and the mel) plus `bias` ->
    tanh * sigmoid, times `gate` -> `res_skip_conv` -> `(h + residual * residual_gate or
    None, skip)`.
    """
    channels = h.shape[1]
    if bias is not None:
        a = a + channel_vector(bias, a)
    # chunk and split, not slices: their gradient is one cat, not a zero fill and a copy
    # per slice
    a_tanh, a_sigmoid = a.chunk(2, dim=1)
    if a.dtype == torch.bfloat16 and a.is_contiguous(memory_format=torch.channels_last):
        # a channels-last chunk is strided, and PyTorch's CPU sigmoid runs about 10x slower
        # on it in bf16 than on a dense copy (in fp32 2x, less than the copy costs)
        a_sigmoid = a_sigmoid.clone(memory_format=torch.channels_last)
    hidden = torch.tanh(a_tanh) * torch.sigmoid(a_sigmoid)
    if gate is not None:
        hidden = hidden * channel_vector(gate, hidden)
    out = res_skip_conv(hidden)
    if not has_residual:
        return None, out
    residual, skip = out.split([channels, out.shape[1] - channels], dim=1)
    if residual_gate is not None:
        residual = residual * channel_vector(residual_gate, residual)
    return h + residual, skip


__all__ = ["Modulation", "channel_vector", "gated_residual_skip"]
