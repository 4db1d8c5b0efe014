"""A run's record: TensorBoard events and `train_log.jsonl`, written by rank 0 only.

`train_log.jsonl` holds one JSON object per logged step: {"step", "kind" ("train" or
"valid"), and the scalars}. It is what scripts and tests read; TensorBoard is for people.
On resume both are cut back to the checkpoint's step, so steps redone after a kill are
not logged twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from vocoder.files import atomic_output

LOG_FILE = "train_log.jsonl"
TENSORBOARD_DIR = "tensorboard"


class TrainLog:
    """Scalars, mel images and audio of a run; does nothing when `enabled` is False."""

    def __init__(self, run_dir: str | Path, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / LOG_FILE
        self._writer = None
        self.logged_references: set[str] = set()  # validation clips whose reference is logged
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_log(self.path, start_step)
        # Imported here: TensorBoard pulls in much, and only rank 0 needs it.
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(
            str(Path(run_dir) / TENSORBOARD_DIR),
            purge_step=start_step + 1 if start_step > 0 else None,
        )

    def scalars(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        """Log scalars under `kind/name` in TensorBoard and as one line of the JSON log."""
        if not self.enabled:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{kind}/{name}", value, step)
        clean = {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "kind": kind, **clean}) + "\n")

    def mel_image(self, tag: str, mel: torch.Tensor, step: int, floor: float = -11.5129) -> None:
        """A log-mel `[n_mels, frames]` as a grey image, low frequencies at the bottom."""
        if not self.enabled:
            return
        mel = mel.detach().float().cpu()
        top = max(float(mel.max()), floor + 1e-3)
        image = ((mel - floor) / (top - floor)).clamp(0, 1).flip(0)
        self._writer.add_image(tag, image, step, dataformats="HW")

    def audio(self, tag: str, audio: torch.Tensor, step: int, sample_rate: int) -> None:
        if not self.enabled:
            return
        audio = audio.detach().float().cpu().clamp(-1, 1).reshape(1, -1)
        self._writer.add_audio(tag, audio, step, sample_rate=sample_rate)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_log(run_dir: str | Path, kind: str | None = "train") -> list[dict]:
    """The entries of a run's `train_log.jsonl` (of one `kind`, or all when None)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [e for e in entries if kind is None or e.get("kind") == kind]


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop entries after `last_step` (those a killed run logged past its last checkpoint)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(entry, dict) and entry.get("step", math.inf) <= last_step:
            kept.append(line)
    if len(kept) != len(lines):
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


__all__ = ["TrainLog", "read_log", "LOG_FILE", "TENSORBOARD_DIR"]
