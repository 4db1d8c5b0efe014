"""Glow's invertible 1x1 convolution over channels (WaveGlow's mixing between couplings)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vocoder.flows.base import Transform, full_precision


class InvertibleConv1x1(Transform):
    """`y[:, :, t] = W x[:, :, t]` for `x` of shape `[B, C, T]`; log|det| = T * log|det W|.

    W starts as a random rotation (orthogonal, determinant +1), as in WaveGlow.
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        if torch.det(q) < 0:
            q[:, 0] = -q[:, 0]
        self.weight = nn.Parameter(q)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = torch.linalg.slogdet(full_precision(self.weight))[1].to(x.dtype) * x.shape[-1]
        return _mix(self.weight, x), logdet.expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        weight = full_precision(self.weight)
        logdet = -torch.linalg.slogdet(weight)[1].to(y.dtype) * y.shape[-1]
        return _mix(torch.linalg.inv(weight), y), logdet.expand(y.shape[0])


def _mix(weight: Tensor, x: Tensor) -> Tensor:
    """`weight @ x[:, :, t]` in x's own precision: this is the audio, so not under autocast."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.einsum("ij,bjt->bit", weight.to(x.dtype), x)


__all__ = ["InvertibleConv1x1"]
