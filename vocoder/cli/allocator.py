"""Keep freed memory in the process instead of handing it back to the OS (glibc only).

CPU inference allocates and frees tensors of hundreds of MB. glibc serves each from a
fresh mmap and unmaps it on free, so the next one page-faults its way in again, and the
batch commands spend much of their time in the kernel. With mmap off and a high trim
threshold they run faster (the README's performance section has the measured figures;
training is unchanged). The price: the process keeps its peak memory until it exits, so
only the batch commands (`synthesize`, `evaluate`) ask for it, not the long-running demo
server. Setting MALLOC_MMAP_MAX_ or MALLOC_TRIM_THRESHOLD_ in the environment leaves glibc
as configured there.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
MAX_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; False where it does not apply."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, MAX_TRIM_THRESHOLD))


__all__ = ["keep_freed_memory"]
