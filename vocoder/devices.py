"""Which torch device a device name means: "auto", "cpu", "cuda" or "cuda:N"."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from vocoder.errors import ConfigError


def resolve_device(
    device: str | torch.device = "auto", local_rank: int | None = None
) -> torch.device:
    """The device `device` names, checked: "auto" is the CPU unless there is a CUDA GPU.

    A CUDA device without an index ("cuda", or "auto" on a GPU machine) is GPU `local_rank`
    when given (a torchrun process's own GPU), else the current CUDA device. Anything that
    is not a CPU or an available CUDA GPU is a `ConfigError`.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but no CUDA GPU is available here")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {resolved}; use auto, cpu or cuda")
    if resolved.type == "cuda" and resolved.index is None:
        index = torch.cuda.current_device() if local_rank is None else local_rank
        resolved = torch.device("cuda", index)
    return resolved


def device_name(device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """What a benchmark row names its device by: the GPU's or the CPU's model name
    ("AMD EPYC 9R14", from /proc/cpuinfo on Linux, where `platform.processor()` is empty)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


__all__ = ["resolve_device", "device_name"]
