"""`ModelCache`: each model the demo serves is loaded once and shared by every request."""

from __future__ import annotations

import threading

from vocoder.inference.engine import Synthesizer


class ModelCache:
    """Synthesizers by name or path, loaded on first use on `device` at `precision`.

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
                self._synthesizers[name_or_path] = synthesizer
            return synthesizer

    def __len__(self) -> int:
        return len(self._synthesizers)
