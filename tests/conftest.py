"""Shared fixtures: the real recordings in ../shared/data and small CPU settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests run on a 2-core machine next to other work; one thread keeps them predictable.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repo (present on every developer machine and on CI)."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"{SHARED_DATA} is missing: the tests need the shared data set")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ljspeech_mini(shared_data: Path) -> Path:
    return shared_data / "ljspeech-mini"


@pytest.fixture(scope="session")
def male_reader(shared_data: Path) -> Path:
    return shared_data / "male-reader"
