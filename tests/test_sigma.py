"""sigma has one default and one rule (a finite number >= 0) wherever it is set."""

from __future__ import annotations

import math

import pytest

from vocoder.cli import main
from vocoder.errors import ConfigError
from vocoder.sigma import DEFAULT_SIGMA, check_sigma
from vocoder.train.config import TrainConfig


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_every_setting_rejects_what_the_engine_rejects(bad, tmp_path, capsys):
    with pytest.raises(ConfigError, match="sigma must be a finite number >= 0"):
        check_sigma(bad)
    with pytest.raises(ConfigError, match="train.valid_sigma must be a finite number >= 0"):
        TrainConfig(valid_sigma=bad).validate()
    for command in ("evaluate", "synthesize"):
        argv = [command, "--sigma", str(bad), "--checkpoint", str(tmp_path / "missing.pt")]
        if command == "synthesize":
            argv = [
                "synthesize",
                str(tmp_path / "in.wav"),
                "--sigma",
                str(bad),
                "-o",
                str(tmp_path),
            ]
        else:
            argv += ["--filelist", str(tmp_path / "missing.txt")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --sigma must be a finite number >= 0"), err


def test_zero_is_allowed_everywhere():
    assert check_sigma(0.0) == 0.0
    TrainConfig(valid_sigma=0.0).validate()
    assert TrainConfig().valid_sigma == DEFAULT_SIGMA == 0.8
