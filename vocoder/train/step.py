"""One optimisation step: forward under autocast, backward, clip, and step when finite."""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from vocoder.models import FlowVocoder
from vocoder.precision import DTYPES
from vocoder.train import distributed

AUTOCAST_DTYPES = {name: DTYPES[name] for name in ("bf16", "fp16")}  # fp32: no autocast


class LogLikelihood(nn.Module):
    """The training objective as a module (so DDP can wrap it): mean LL per sample, `[B]`."""

    def __init__(self, model: FlowVocoder):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob(audio, mel)


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over all ranks
    grad_norm: float  # before clipping
    skipped: bool
    stop: bool  # some rank asked to stop


def train_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    audio: torch.Tensor,
    mel: torch.Tensor,
    precision: str = "fp32",
    grad_clip: float | None = None,
    dist: distributed.DistInfo | None = None,
    stop_requested: bool = False,
) -> StepResult:
    """Forward, backward, clip and (when everything is finite) step.

    Every rank takes the same decision: the loss is averaged over ranks and the gradient
    norm is computed after DDP's all-reduce. With fp16, overflowing gradients are the
    GradScaler's business (it skips and lowers the scale); they are not counted as bad.
    """
    device_type = audio.device.type
    dtype = AUTOCAST_DTYPES.get(precision)
    autocast = torch.autocast(device_type, dtype=dtype) if dtype else contextlib.nullcontext()
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        ll = objective(audio, mel)
    loss = -ll.float().mean()
    with warnings.catch_warnings():
        # oneDNN's bf16 backward of a 1x1 conv gives the weight gradient other strides on
        # its size-1 axes ([8, 1, 8, 8] for [8, 1, 1, 1]): the same memory layout, but DDP
        # compares strides and warns in four lines on every rank
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
    # one collective for both: the mean loss and whether any rank wants to stop
    shared = torch.stack([loss.detach(), torch.tensor(float(stop_requested), device=loss.device)])
    if dist is not None:
        shared = distributed.all_reduce_mean(shared, dist)
    mean_loss, stop = float(shared[0]), bool(shared[1] > 0)
    norm = float(grad_norm)
    skipped = not math.isfinite(mean_loss) or (not math.isfinite(norm) and precision != "fp16")
    if not skipped:
        scaler.step(optimizer)
    scaler.update()
    return StepResult(mean_loss, norm, skipped, stop)


__all__ = ["AUTOCAST_DTYPES", "LogLikelihood", "StepResult", "train_step"]
