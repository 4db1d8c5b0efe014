"""The training data's guards and the sampler that resumes mid-epoch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from torch.utils.data import Sampler

from vocoder.data.filelist import read_filelist
from vocoder.errors import ConfigError, InputError, some_of
from vocoder.train.config import ExperimentConfig


class SkipSampler(Sampler[int]):
    """The indices of `sampler` after the first `skip` (to resume mid-epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int):
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def loader_workers(requested: int) -> int:
    """`data.num_workers`, at most the CPU cores this process may run on (PyTorch warns
    beyond that, and more processes than cores only take turns)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(requested, cores or 1)


def filelist_files(filelist: Path | None, part: str) -> list[Path]:
    """The files of the `part` filelist; a missing or empty list is an error."""
    if filelist is None:
        raise ConfigError(f"data: no {part} filelist")
    files = read_filelist(filelist)
    if not files:
        raise InputError(filelist, f"the {part} filelist is empty")
    return files


def stems_of_test_list(config: ExperimentConfig) -> set[str]:
    """The name stems of the test list's files (none without a test list)."""
    test_list = config.data.filelist("test")
    if test_list is None or not test_list.is_file():
        return set()
    return {p.stem for p in read_filelist(test_list, check_exists=False)}


def check_no_test_files(train_files: list[Path], test_ids: set[str]) -> None:
    """Refuse to train on any file of the test list (`stems_of_test_list`; by name stem)."""
    leaked = sorted({p.stem for p in train_files} & test_ids)
    if leaked:
        raise ConfigError(
            f"data: {len(leaked)} training file(s) are in the test list: {some_of(leaked)}"
        )


def optional_path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


__all__ = [
    "loader_workers",
    "SkipSampler",
    "filelist_files",
    "check_no_test_files",
    "optional_path",
    "stems_of_test_list",
]
