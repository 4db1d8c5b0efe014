"""How much the engine synthesizes at once: utterances per batch and working memory."""

from __future__ import annotations

import torch

MAX_BATCH = 16  # utterances or windows synthesized together at most
CPU_MEMORY_BUDGET = 2 << 30  # bytes of working memory per synthesis step on the CPU
GPU_MEMORY_FRACTION = 0.25  # of the GPU's memory


def default_batch_size(device: torch.device) -> int:
    """Utterances synthesized together when none is asked for: 8 on a GPU; `MAX_BATCH` on
    a CPU, whose row engine lays short ones end to end rather than padding them (faster
    for short clips, the same for long ones: see the README)."""
    return 8 if device.type == "cuda" else MAX_BATCH


def log_prob_batch_size(device: torch.device) -> int:
    """Utterances per log-likelihood pass (evaluation) when none is asked for: 8 on a GPU,
    1 on a CPU, where the padded parallel pass costs more than it saves (README)."""
    return 8 if device.type == "cuda" else 1


def default_budget(device: torch.device) -> int:
    """Bytes of working memory per synthesis step on `device`."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total * GPU_MEMORY_FRACTION)
    return CPU_MEMORY_BUDGET


__all__ = ["MAX_BATCH", "default_batch_size", "default_budget", "log_prob_batch_size"]
