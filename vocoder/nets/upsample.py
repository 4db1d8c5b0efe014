"""Mel upsamplers: frames -> one conditioning vector per audio sample.

`MelUpsampler2D` (WaveFlow/NanoFlow): two weight-normed `ConvTranspose2d(1, 1)` layers over
the `[n_mels, frames]` image, each with stride (1, s), kernel (3, 2s) and padding (1, s/2)
(kernel 2s - 1 for an odd s), each followed by LeakyReLU(0.4); the two strides multiply to
the hop length (16 x 16 = 256 in the reference). It returns exactly `frames * hop` samples.
`MelUpsampler1D` (WaveGlow): one `ConvTranspose1d(n_mels, n_mels, 4 * hop, stride hop)`,
returning `(frames + 3) * hop` samples. Callers trim to the audio length.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def split_stride(hop_length: int) -> tuple[int, int]:
    """Two strides with product `hop_length`, as close to each other as possible.

    256 -> (16, 16), 300 -> (15, 20), 512 -> (16, 32), 16 -> (4, 4).
    """
    first = max(d for d in range(1, math.isqrt(hop_length) + 1) if hop_length % d == 0)
    return first, hop_length // first


class MelUpsampler2D(nn.Module):
    """`[B, n_mels, F]` -> `[B, n_mels, F * prod(strides)]` (WaveFlow's upsampler)."""

    def __init__(self, strides: tuple[int, ...] = (16, 16), negative_slope: float = 0.4):
        super().__init__()
        self.strides = tuple(strides)
        self.negative_slope = negative_slope
        self.layers = nn.ModuleList()
        for s in self.strides:
            # kernel 2s (2s - 1 for odd s, to stay symmetric) with padding s // 2 gives exactly
            # F * s outputs
            width = 2 * s if s % 2 == 0 else 2 * s - 1
            conv = nn.ConvTranspose2d(1, 1, (3, width), stride=(1, s), padding=(1, s // 2))
            self.layers.append(weight_norm(conv))

    def forward(self, mel: Tensor) -> Tensor:
        x = mel.unsqueeze(1)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), self.negative_slope)
        return x.squeeze(1)


class MelUpsampler1D(nn.Module):
    """`[B, n_mels, F]` -> `[B, n_mels, (F + 3) * hop]` (WaveGlow's upsampler, no weight norm)."""

    def __init__(self, n_mels: int, hop_length: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(n_mels, n_mels, 4 * hop_length, stride=hop_length)

    def forward(self, mel: Tensor) -> Tensor:
        return self.conv(mel)


__all__ = ["split_stride", "MelUpsampler2D", "MelUpsampler1D"]
