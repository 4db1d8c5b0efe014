"""Which checkpoints a run keeps: the newest, and never fewer than one finite one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vocoder.checkpoint import list_checkpoints, load_checkpoint
from vocoder.errors import InputError


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0 keeps all); returns those deleted.

    A finite checkpoint is never deleted in favour of non-finite ones: when none of the
    newest `keep_last` is finite, the newest finite older one stays as well.
    """
    if keep_last <= 0:
        return []
    checkpoints = list_checkpoints(run_dir)
    old, kept = checkpoints[:-keep_last], checkpoints[-keep_last:]
    if old and not any(checkpoint_is_finite(p) for p in reversed(kept)):
        finite = next((p for p in reversed(old) if checkpoint_is_finite(p)), None)
        old = [p for p in old if p != finite]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def non_finite_tensor(state: Any, prefix: str = "") -> str | None:
    """The name of the first floating tensor holding NaN or infinity in a (nested) state,
    e.g. "optimizer.state.3.exp_avg"; None when all are finite."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return prefix or "tensor" if bad else None
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        if key == "rng" and not prefix:  # a checkpoint's generator states are bytes
            continue
        found = non_finite_tensor(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def checkpoint_is_finite(path: str | Path) -> bool:
    """Whether a checkpoint's weights and optimizer state are all finite (False when it
    cannot be read)."""
    try:
        state = load_checkpoint(path)
    except InputError:
        return False
    return non_finite_tensor(state) is None


__all__ = ["prune_checkpoints", "non_finite_tensor", "checkpoint_is_finite"]
