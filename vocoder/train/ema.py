"""An exponential moving average of a model's weights (validated and saved beside them)."""

from __future__ import annotations

import torch
from torch import nn

from vocoder.models import FlowVocoder, build_model


class EMA:
    """Exponential moving average of a model's weights: `avg += (1 - decay) (w - avg)`."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._model: nn.Module | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].lerp_(value, 1.0 - self.decay)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value)

    def model_like(self, model: FlowVocoder) -> FlowVocoder:
        """A model of `model`'s kind holding the averaged weights (one copy, reused)."""
        if self._model is None:
            self._model = build_model(model.config).to(next(model.parameters()).device)
        self._model.load_state_dict(self.shadow)
        return self._model


__all__ = ["EMA"]
