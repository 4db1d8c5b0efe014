"""The one interface every invertible piece follows, and their composition.

`forward(x, context)` maps data towards the latent and returns `(y, logdet)`, where
`logdet` has one value per batch item: the log |det dy/dx| summed over all elements.
`inverse(y, context)` maps back and returns `(x, logdet)` with the log-determinant of
the inverse map (the negative of the forward one).
"""

from __future__ import annotations

from torch import Tensor, nn


class Transform(nn.Module):
    """An invertible map with a tractable log-determinant."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Sequence(Transform):
    """Transforms applied in order; the inverse runs them backwards. Log-dets add up."""

    def __init__(self, *transforms: Transform):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, logdet = t(x, context)
            total = total + logdet
        return x, total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for t in reversed(self.transforms):
            y, logdet = t.inverse(y, context)
            total = total + logdet
        return y, total


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


__all__ = ["Transform", "Sequence", "sum_except_batch"]
