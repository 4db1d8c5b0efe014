"""The one interface every invertible piece follows.

`forward(x, context)` maps data towards the latent and returns `(y, logdet)`, where
`logdet` has one value per batch item: the log |det dy/dx| summed over all elements.
`inverse(y, context)` maps back and returns `(x, logdet)` with the log-determinant of
the inverse map (the negative of the forward one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Transform(nn.Module):
    """An invertible map with a tractable log-determinant."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


HALF_DTYPES = (torch.bfloat16, torch.float16)


def full_precision(x: Tensor) -> Tensor:
    """`x` in float32 where it is bf16 or fp16 (a network under autocast, half weights),
    else as it is: the elementwise maps, the audio, log-determinants and inverses of
    weights are never computed in half."""
    return x.float() if x.dtype in HALF_DTYPES else x


__all__ = ["HALF_DTYPES", "Transform", "full_precision", "sum_except_batch"]
