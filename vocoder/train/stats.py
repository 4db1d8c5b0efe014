"""Running means of the logged training scalars, and the log line they make."""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger(__name__)


class RunningStats:
    """Running means of the logged scalars and the step rate since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, loss: float, grad_norm: float) -> None:
        self.losses.append(loss)
        if math.isfinite(grad_norm):
            self.norms.append(grad_norm)

    def steps_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return len(self.losses) / elapsed if elapsed > 0 else 0.0

    def summary(self) -> dict[str, float]:
        loss = sum(self.losses) / len(self.losses) if self.losses else math.nan
        norm = sum(self.norms) / len(self.norms) if self.norms else math.nan
        return {"loss": loss, "ll": -loss, "grad_norm": norm, "steps_per_s": self.steps_per_s()}


def log_stats_line(step: int, max_steps: int, stats: dict[str, float]) -> None:
    """One log line: step, loss, LL, gradient norm, lr, rate and ETA."""
    rate = stats["steps_per_s"]
    eta = (max_steps - step) / rate if rate > 0 else math.nan
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
    if math.isfinite(eta) and eta >= 86400:
        eta_text = f"{eta / 86400:.1f} days"
    log.info(
        f"step {step}/{max_steps}  loss {stats['loss']:.4f}  LL {stats['ll']:.4f}  "
        f"grad {stats['grad_norm']:.3g}  lr {stats['lr']:.3g}  {rate:.2f} steps/s  ETA {eta_text}"
    )


__all__ = ["RunningStats", "log_stats_line"]
