"""Data-parallel training under torchrun: process-group set-up, DDP, collectives.

`vocoder train --nproc N` (or `torchrun --nproc_per_node=N -m vocoder train ...`) sets
RANK, LOCAL_RANK and WORLD_SIZE; `setup` then joins the group (env:// rendezvous; NCCL on
CUDA, gloo on CPU). Without those variables it is a single process and every helper here
is a no-op. Only rank 0 writes files (checkpoints, logs, TensorBoard).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vocoder.devices import resolve_device
from vocoder.errors import VocoderError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun job when launched by torchrun, else describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        kwargs = {"device_id": resolved} if resolved.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (at the end of a run, or on an error)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP around `model` in a multi-process job; the model itself otherwise.

    DDP broadcasts rank 0's weights at construction, so every rank starts identical.
    """
    if not info.enabled:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (what checkpoints store)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# what a collective raises when another process of the job is gone: gloo's socket errors (as
# plain RuntimeErrors, from DDP's gradient hooks too) and NCCL's
PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exited",
    "communicator was aborted",
)


class PeerLost(VocoderError):
    """Another process of the job stopped (killed, crashed) while this one needed it."""


def peer_lost(error: BaseException, info: DistInfo) -> PeerLost | None:
    """`error` as a `PeerLost` when, in a multi-process job, it says a peer is gone."""
    if not info.enabled or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if not any(phrase in text for phrase in PEER_LOST):
        return None
    detail = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    return PeerLost(
        f"training process {info.rank}: another training process of the job stopped "
        f"({detail.strip()[:200]}); resume the run from its last checkpoint"
    )


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of `value` over all ranks (a copy; `value` itself is left alone)."""
    value = value.detach().clone()
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def weights_digest(model: nn.Module) -> str:
    """A SHA-256 of all parameters and buffers, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in unwrap(model).state_dict().items():
        digest.update(name.encode())
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


def check_replicas_equal(model: nn.Module, info: DistInfo) -> str:
    """Raise unless every rank holds bit-identical weights; returns this rank's digest."""
    local = weights_digest(model)
    if not info.enabled:
        return local
    digests: list[str | None] = [None] * info.world_size
    dist.all_gather_object(digests, local)
    if len(set(digests)) != 1:
        raise VocoderError(
            "DDP replicas diverged: weight digests differ across ranks "
            + ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
        )
    return local


__all__ = [
    "DistInfo",
    "setup",
    "cleanup",
    "wrap",
    "unwrap",
    "barrier",
    "all_reduce_mean",
    "weights_digest",
    "check_replicas_equal",
    "PeerLost",
    "peer_lost",
]
