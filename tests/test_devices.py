"""One rule for device names, shared by training (`train.distributed.setup`) and inference."""

from __future__ import annotations

import pytest
import torch

from vocoder.devices import device_name, resolve_device
from vocoder.errors import ConfigError
from vocoder.train.distributed import setup


def test_names_resolve_to_checked_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    for bad, message in [("bogus", "unknown device 'bogus'"), ("mps", "unsupported device")]:
        with pytest.raises(ConfigError, match=message):
            resolve_device(bad)


def test_training_reports_an_unknown_device_in_one_line_too():
    with pytest.raises(ConfigError, match="unknown device 'bogus'"):
        setup("bogus")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda:0", local_rank=0)


@pytest.mark.cuda
def test_an_unindexed_cuda_device_is_the_local_rank_s_gpu_in_training():
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda:0", local_rank=5) == torch.device("cuda", 0)  # index given
    assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    assert setup("cuda").device == torch.device("cuda", 0)  # LOCAL_RANK unset: rank 0


def test_device_name_reads_the_cpu_model(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n")
    assert device_name(torch.device("cpu"), cpuinfo) == "AMD EPYC 9R14"
    # without /proc/cpuinfo (macOS, Windows): what platform says, never an empty name
    assert device_name(torch.device("cpu"), tmp_path / "none") != ""
