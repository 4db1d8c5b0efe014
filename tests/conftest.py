"""Shared fixtures: real recordings and small CPU settings.

Most tests read the few clips shipped in tests/data (see its README). The few that need
many clips read ../shared/data beside the repo (developer machines and CI) and skip with a
reason when it is absent, so the suite passes from a plain clone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
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
def ljspeech_clips() -> Path:
    """tests/data/ljspeech: 12 LJ Speech clips in the ljspeech-mini layout (7 train, 5 test)."""
    return TEST_DATA / "ljspeech"


@pytest.fixture(scope="session")
def male_reader_clips() -> Path:
    """tests/data/male-reader: 7 clips of the male-reader voice (5 train, 2 test)."""
    return TEST_DATA / "male-reader"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repo, for the tests that need many clips; skips without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data set ../shared/data beside the repo ({SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ljspeech_mini(shared_data: Path) -> Path:
    """All 58 ljspeech-mini clips (42 train, 16 test), from ../shared/data."""
    return shared_data / "ljspeech-mini"


@pytest.fixture(scope="session")
def male_reader(shared_data: Path) -> Path:
    """All 364 male-reader clips (344 train, 20 test), from ../shared/data."""
    return shared_data / "male-reader"
