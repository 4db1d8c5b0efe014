"""Which precision a device runs best: bf16 on CPUs with bf16 arithmetic units, else fp32.

Synthesis (`vocoder synthesize --device cpu`) and training (`train.precision: auto`) take
it by default; bench/cpu_engine.py and bench/train_precision.py measure both the speed and
what bf16 costs in quality there.

A CPU has bf16 units when it reports the `avx512_bf16` (AVX512-BF16: Cooper Lake, Zen 4 and
later) or `amx_bf16` (AMX: Sapphire Rapids and later) instruction-set flags; there oneDNN
runs bf16 matrix products at about twice (AVX512-BF16) to four times (AMX) the fp32 rate.
Without them bf16 is emulated and no faster, so fp32 stays the default. The flags are read
from /proc/cpuinfo (Linux) and must agree with oneDNN's own check
(`torch.ops.mkldnn._is_mkldnn_bf16_supported`); anything missing or failing means "none"
and the default fp32.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # best first
# the precisions by name, as configs and the command line give them
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


@cache
def cpu_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's bf16 instruction set ("amx_bf16" or "avx512_bf16"), or None."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return next((flag for flag in BF16_FLAGS if flag in flags), None)


def onednn_bf16() -> bool:
    """Whether this PyTorch build's oneDNN runs bf16 on this CPU natively."""
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def default_precision(device: torch.device) -> str:
    """ "bf16" on a CPU with bf16 units that oneDNN uses, else "fp32" (GPUs too: the caller
    chooses there)."""
    if device.type == "cpu" and cpu_bf16_units() is not None and onednn_bf16():
        return "bf16"
    return "fp32"


__all__ = ["BF16_FLAGS", "DTYPES", "cpu_bf16_units", "default_precision", "onednn_bf16"]
