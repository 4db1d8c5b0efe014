"""`ModelCache`: each model the demo serves is loaded once and shared by every request."""

from __future__ import annotations

import threading

import torch

from vocoder.inference.engine import Synthesizer

WARM_UP_FRAMES = 32  # mel frames of the synthesis that warms a model up


def quiet_mel(n_mels: int) -> torch.Tensor:
    """A short, quiet ln-mel `[n_mels, WARM_UP_FRAMES]` to warm up a model or Griffin-Lim."""
    return torch.full((n_mels, WARM_UP_FRAMES), -5.0)


class ModelCache:
    """Synthesizers by name or path, loaded (and warmed up) on first use on `device` at
    `precision`.

    A lock keeps two concurrent first requests from loading a model twice.
    """

    def __init__(self, device: str = "auto", precision: str = "fp32"):
        self.device = device
        self.precision = precision
        self._synthesizers: dict[str, Synthesizer] = {}
        self._lock = threading.Lock()

    def get(self, name_or_path: str) -> Synthesizer:
        """The synthesizer for `name_or_path`, loading it the first time."""
        with self._lock:
            synthesizer = self._synthesizers.get(name_or_path)
            if synthesizer is None:
                synthesizer = Synthesizer.load(
                    name_or_path, device=self.device, precision=self.precision
                )
                # one short synthesis pays the one-off costs (kernels made, weights packed,
                # memory claimed) here, not in the first visitor's time and RTF; its constant
                # mel would be taken for log10 by the range check, which is for visitors' mels
                synthesizer.synthesize_batch(
                    [quiet_mel(synthesizer.n_mels)], sigma=0.0, seed=0, warn=False
                )
                self._synthesizers[name_or_path] = synthesizer
            return synthesizer

    def __len__(self) -> int:
        return len(self._synthesizers)
