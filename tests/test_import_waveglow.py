"""Importing NVIDIA WaveGlow checkpoints: never running their pickle, and matching the reference.

The golden files (../shared/reference/goldens, see its README) hold checkpoints in NVIDIA's
formats and what NVIDIA's own code computed from them; a user's plain clone lacks them, so
those tests skip there.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vocoder.errors import InputError
from vocoder.features import MelConfig
from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.importers import import_checkpoint
from vocoder.importers.nvidia import convert_nvidia_waveglow, is_nvidia_waveglow
from vocoder.importers.safe_pickle import ModuleRecord, load_foreign_checkpoint, module_state_dict
from vocoder.models import build_model

REPO = Path(__file__).resolve().parents[1]
GOLDENS = REPO.parent / "shared" / "reference" / "goldens"
needs_goldens = pytest.mark.skipif(
    not (GOLDENS / "waveglow-small.npz").is_file(),
    reason=f"the reference goldens ({GOLDENS}) are not beside this clone",
)
WAVEGLOW_FILES = ["waveglow-small.pt", "waveglow-small-noweightnorm.pt", "waveglow-small-legacy.pt"]


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    with np.load(GOLDENS / "waveglow-small.npz") as npz:
        return {k: torch.from_numpy(npz[k]) for k in npz.files}


def waveglow_differences(config, state, golden) -> dict[str, float]:
    """Max abs differences from NVIDIA's outputs: z, log-likelihood, inverse audio."""
    model = build_model(config)
    model.load_state_dict(state, strict=True)
    model.eval()
    audio, mel = golden["audio"].float(), golden["mel"].float()
    # NVIDIA's infer draws the main noise, then the early noise of flow 8, then of flow 4,
    # and prepends each: z's channels are [flow 4's, flow 8's, main], as its forward emits them
    noise = [golden[k] for k in ("infer_z_early_1", "infer_z_early_0", "infer_z_main")]
    z_infer = unsqueeze(float(golden["infer_sigma"]) * torch.cat(noise, dim=1).float())
    with torch.no_grad():
        z, _ = model(audio, mel)
        ll = model.log_prob(audio, mel)
        reverse = model.inverse(z_infer, mel)
    assert reverse.shape == golden["infer_audio"].shape == (1, 63 * 256)
    return {
        "z": (squeeze(z, config.n_group) - golden["z"]).abs().max().item(),
        "ll": abs(ll.item() - golden["ll"].item()),
        "reverse": (reverse - golden["infer_audio"]).abs().max().item(),
    }


def assert_matches_reference(config, state, golden) -> None:
    diff = waveglow_differences(config, state, golden)
    assert diff["z"] < 1e-4 and diff["ll"] < 1e-5 and diff["reverse"] < 1e-3, diff


def assert_one_line_error(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


@needs_goldens
@pytest.mark.parametrize("name", WAVEGLOW_FILES)
def test_nvidia_training_checkpoints_match_reference(name, golden):
    data = load_foreign_checkpoint(GOLDENS / name)
    assert isinstance(data["model"], ModuleRecord)
    assert data["model"].class_name == "glow.WaveGlow"
    assert is_nvidia_waveglow(data)
    config, state = convert_nvidia_waveglow(data, GOLDENS / name)
    reference = json.loads((GOLDENS / "waveglow-small.json").read_text())
    assert convert_nvidia_waveglow(data, GOLDENS / name, reference)[0] == config
    assert (config.family, config.n_flows, config.n_group, config.n_mels) == ("waveglow", 12, 8, 20)
    assert (config.n_early_every, config.n_early_size, config.n_layers, config.channels) == (
        4,
        2,
        4,
        32,
    )
    assert (config.kernel_size, config.hop_length, config.sample_rate) == (3, 256, 22050)
    assert_matches_reference(config, state, golden)


@needs_goldens
def test_legacy_and_zip_files_hold_the_same_tensors():
    zipped = module_state_dict(load_foreign_checkpoint(GOLDENS / "waveglow-small.pt")["model"])
    legacy = load_foreign_checkpoint(GOLDENS / "waveglow-small-legacy.pt")["model"]
    legacy = module_state_dict(legacy)
    assert zipped.keys() == legacy.keys()
    assert "WN.0.cond_layer.weight_g" in zipped and "WN.11.end.bias" in zipped
    assert all(torch.equal(zipped[k], legacy[k]) for k in zipped)


def saved_on_a_gpu(legacy: bytes, storages: tuple[str, ...] = ("FloatStorage",)) -> bytes:
    """A legacy file as torch < 1.6 wrote it from a GPU (NVIDIA's published ones): each
    storage of class `torch.cuda.<X>Storage`, at 'cuda:0'. Made from a CPU-saved file by
    renaming both in its pickle (protocol 2: GLOBAL and BINUNICODE opcodes)."""
    for storage in storages:
        name = storage.encode()
        assert legacy.count(b"ctorch\n" + name + b"\n") == 1
        legacy = legacy.replace(b"ctorch\n" + name + b"\n", b"ctorch.cuda\n" + name + b"\n")
    assert b"X\x03\x00\x00\x00cpu" in legacy
    return legacy.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")


@needs_goldens
def test_a_legacy_file_saved_on_a_gpu_imports_on_a_cpu(tmp_path):
    path = tmp_path / "waveglow_256channels_universal_v5.pt"
    path.write_bytes(saved_on_a_gpu((GOLDENS / "waveglow-small-legacy.pt").read_bytes()))
    on_gpu = module_state_dict(load_foreign_checkpoint(path)["model"])
    on_cpu = module_state_dict(load_foreign_checkpoint(GOLDENS / "waveglow-small.pt")["model"])
    assert on_gpu.keys() == on_cpu.keys()
    assert all(torch.equal(on_gpu[k], on_cpu[k]) for k in on_cpu)
    expected = import_checkpoint(GOLDENS / "waveglow-small.pt").model.state_dict()
    imported = import_checkpoint(path).model.state_dict()
    assert all(torch.equal(imported[k], expected[k]) for k in expected)


def test_half_and_float_storages_of_a_gpu_legacy_file_load_with_their_dtypes(tmp_path):
    state = {"a": torch.randn(3, 2), "b": torch.randn(5).half(), "c": torch.arange(4)}
    torch.save({"state_dict": state}, tmp_path / "cpu.pt", _use_new_zipfile_serialization=False)
    gpu = saved_on_a_gpu(
        (tmp_path / "cpu.pt").read_bytes(), ("FloatStorage", "HalfStorage", "LongStorage")
    )
    (tmp_path / "nvidia_waveglowpyt_fp16_20190427").write_bytes(gpu)
    loaded = load_foreign_checkpoint(tmp_path / "nvidia_waveglowpyt_fp16_20190427")["state_dict"]
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor)


@pytest.mark.parametrize(
    "page",
    [
        b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>",
        b"\n  <html lang='en'><body>Sorry, the file you have requested does not exist.",
    ],
)
def test_a_web_page_saved_by_a_failed_download_is_named_as_such(tmp_path, page):
    path = tmp_path / "waveflow-h16-r64.pt"
    path.write_bytes(page)
    with pytest.raises(InputError) as error:
        import_checkpoint(path)
    assert_one_line_error(error, str(path), "a web page, not a checkpoint", "download")


def rebuilt_module(record: ModuleRecord, glow: types.ModuleType) -> nn.Module:
    """The module a record was pickled from, as real objects: glow's classes stand-ins of
    that name (no code of NVIDIA's: only the pickled state), torch's the real ones."""
    module_name, _, name = record.class_name.rpartition(".")
    if module_name == "glow":
        if not hasattr(glow, name):
            setattr(glow, name, type(name, (nn.Module,), {"__module__": "glow"}))
        cls = getattr(glow, name)
    else:
        cls = getattr(sys.modules[module_name], name)
    module = cls.__new__(cls)

    def rebuilt(value):
        if isinstance(value, ModuleRecord):
            return rebuilt_module(value, glow)
        if isinstance(value, dict):
            return type(value)((k, rebuilt(v)) for k, v in value.items())
        return value

    module.__setstate__({k: rebuilt(v) for k, v in record.state.items()})
    return module


@needs_goldens
@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")  # torch.save, legacy
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_waveglow_module_saved_alone_imports_as_its_training_checkpoint(
    legacy, tmp_path, monkeypatch
):
    """`torch.save(waveglow, path)`: the module alone, no `{'model': ...}` around it."""
    golden = GOLDENS / "waveglow-small-noweightnorm.pt"
    glow = types.ModuleType("glow")
    monkeypatch.setitem(sys.modules, "glow", glow)
    module = rebuilt_module(load_foreign_checkpoint(golden)["model"], glow)
    path = tmp_path / "waveglow.pt"
    torch.save(module, path, _use_new_zipfile_serialization=not legacy)
    monkeypatch.delitem(sys.modules, "glow")
    assert isinstance(load_foreign_checkpoint(path), ModuleRecord)
    imported, expected = import_checkpoint(path), import_checkpoint(golden)
    assert imported.model.config == expected.model.config
    state, wanted = imported.model.state_dict(), expected.model.state_dict()
    assert state.keys() == wanted.keys() and all(torch.equal(state[k], wanted[k]) for k in wanted)


def nvidia_hub_state(record: ModuleRecord, n_layers: int) -> dict[str, torch.Tensor]:
    """NVIDIA names as torch.hub / NGC store them: `module.` prefix, one cond conv per layer."""
    state: dict[str, torch.Tensor] = {}
    for key, value in module_state_dict(record).items():
        prefix, found, suffix = key.partition(".cond_layer.")
        if not found:
            state[f"module.{key}"] = value
            continue
        for i, part in enumerate(value.chunk(n_layers)):  # split by output channels
            state[f"module.{prefix}.cond_layers.{i}.{suffix}"] = part.clone()
    return state


@needs_goldens
@pytest.mark.parametrize("name", ["waveglow-small.pt", "waveglow-small-noweightnorm.pt"])
def test_torch_hub_checkpoint_matches_reference(name, golden, tmp_path):
    record = load_foreign_checkpoint(GOLDENS / name)["model"]
    config = json.loads((GOLDENS / "waveglow-small.json").read_text())["waveglow_config"]
    path = tmp_path / "nvidia_waveglowpyt_fp32.pt"
    torch.save({"state_dict": nvidia_hub_state(record, 4), "config": config}, path)
    data = load_foreign_checkpoint(path)
    assert any(k.startswith("module.WN.0.cond_layers.3.") for k in data["state_dict"])
    assert is_nvidia_waveglow(data)
    model_config, state = convert_nvidia_waveglow(data, path)
    assert_matches_reference(model_config, state, golden)
    # without any config, from the shapes alone
    assert convert_nvidia_waveglow({"state_dict": data["state_dict"]}, path)[0] == model_config

    data["config"]["WN_config"]["n_channels"] = 64
    with pytest.raises(InputError) as error:
        convert_nvidia_waveglow(data, path)
    assert_one_line_error(error, str(path), "n_channels = 64")


@needs_goldens
def test_the_oldest_code_with_separate_res_and_skip_layers_is_refused(tmp_path):
    """glow_old.py swaps the coupling halves in odd flows: its layout is refused, by class
    name or, in a state dict, by its separate res_layers and skip_layers."""
    data = load_foreign_checkpoint(GOLDENS / "waveglow-small.pt")
    state = module_state_dict(data["model"])
    for key in [k for k in state if ".res_skip_layers." in k]:
        value = state.pop(key)
        wn, _, rest = key.partition(".res_skip_layers.")
        layer, _, suffix = rest.partition(".")
        if layer == "3":  # the last layer: skip only
            state[f"{wn}.skip_layers.{layer}.{suffix}"] = value
        else:
            res, skip = value.chunk(2)
            state[f"{wn}.res_layers.{layer}.{suffix}"] = res
            state[f"{wn}.skip_layers.{layer}.{suffix}"] = skip
    with pytest.raises(InputError) as error:
        convert_nvidia_waveglow({"model": state}, "old.pt")
    assert_one_line_error(error, "old.pt", "glow_old.py", "odd flows", "not imported")

    # the module pickled by glow_old.py's classes, as NVIDIA's repository keeps them
    legacy = (GOLDENS / "waveglow-small-legacy.pt").read_bytes()
    for name in (b"WaveGlow", b"WN"):
        assert legacy.count(b"cglow\n" + name + b"\n") == 1
        legacy = legacy.replace(b"cglow\n" + name + b"\n", b"cglow_old\n" + name + b"\n")
    (tmp_path / "waveglow_old.pt").write_bytes(legacy)
    with pytest.raises(InputError) as error:
        import_checkpoint(tmp_path / "waveglow_old.pt")
    assert_one_line_error(error, "waveglow_old.pt", "glow_old.py", "not imported")


@needs_goldens
def test_shapes_that_do_not_fit_are_refused():
    data = load_foreign_checkpoint(GOLDENS / "waveglow-small-noweightnorm.pt")
    state = module_state_dict(data["model"])
    state["WN.5.end.weight"] = state["WN.5.end.weight"][:, :16]
    with pytest.raises(InputError) as error:
        convert_nvidia_waveglow({"state_dict": state}, "bad.pt")
    assert_one_line_error(error, "bad.pt", "WN.5.end.weight", "(6, 16, 1)")

    state = module_state_dict(data["model"])
    state["WN.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError) as error:
        convert_nvidia_waveglow({"state_dict": state}, "extra.pt")
    assert_one_line_error(error, "extra.pt", "WN.0.extra.weight")

    with pytest.raises(InputError) as error:
        convert_nvidia_waveglow(data, "wg.pt", {"n_flows": 10})
    assert_one_line_error(error, "wg.pt", "n_flows = 10")


# ---- the loader never runs the pickle ----


class RunsCommand:
    """Unpickling this would run `call(*args)`."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@needs_goldens
def test_the_configs_audio_settings_become_the_models_mel_convention(tmp_path):
    config = json.loads((GOLDENS / "waveglow-small.json").read_text())
    audio = {"sampling_rate": 16000, "filter_length": 1024, "hop_length": 256}
    config["data_config"] = {**audio, "win_length": 800, "mel_fmin": 55.0, "mel_fmax": None}
    (tmp_path / "16k.json").write_text(json.dumps(config))
    imported = import_checkpoint(GOLDENS / "waveglow-small.pt", tmp_path / "16k.json")
    features = imported.features
    assert (features.sample_rate, features.win_length, features.n_mels) == (16000, 800, 20)
    assert (features.fmin, features.fmax) == (55.0, None)  # null: up to Nyquist, as librosa
    assert imported.model.config.sample_rate == 16000
    plain = import_checkpoint(GOLDENS / "waveglow-small.pt", GOLDENS / "waveglow-small.json")
    assert plain.features == MelConfig.preset("tacotron2", n_mels=20)  # no data_config
    for change, problem in [
        ({"hop_length": 200}, "data_config.hop_length is 200; the reference models' upsampl"),
        ({"sampling_rate": "16k"}, "data_config.sampling_rate is '16k', not a number"),
        ({"n_mel_channels": 80}, "data_config.n_mel_channels is 80, the weights 20"),
        ({"mel_fmax": 9000.0}, "its data_config: features: need 0 <= fmin < fmax <= sample_rate/2"),
    ]:
        config["data_config"] = {**audio, **change}
        (tmp_path / "bad.json").write_text(json.dumps(config))
        with pytest.raises(InputError, match=problem) as e:
            import_checkpoint(GOLDENS / "waveglow-small.pt", tmp_path / "bad.json")
        assert e.value.source == str(tmp_path / "bad.json")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_code_in_the_pickle_is_refused_and_never_run(kind, legacy, tmp_path):
    marker = tmp_path / "SOMEFILE"
    command = f"touch {marker}"
    payload, name = {
        "os.system": (RunsCommand(os.system, command), f"{os.system.__module__}.system"),
        "builtins.eval": (
            RunsCommand(builtins.eval, f"__import__('os').system({command!r})"),
            "builtins.eval",
        ),
        "subprocess.Popen": (RunsCommand(subprocess.Popen, ["touch", str(marker)]), kind),
    }[kind]
    path = tmp_path / "evil.pt"
    torch.save({"model": payload}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(InputError) as error:
        load_foreign_checkpoint(path)
    assert_one_line_error(error, str(path), f"refusing to unpickle global {name!r}")
    assert "nothing was executed" in str(error.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")  # torch.save, legacy
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_unknown_module_class_is_named(legacy, tmp_path, monkeypatch):
    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 1)

    glow = types.ModuleType("glow")
    Foo.__module__, Foo.__qualname__, Foo.__name__ = "glow", "Foo", "Foo"
    glow.Foo = Foo
    monkeypatch.setitem(sys.modules, "glow", glow)
    path = tmp_path / "foo.pt"
    torch.save({"model": Foo()}, path, _use_new_zipfile_serialization=not legacy)
    monkeypatch.delitem(sys.modules, "glow")
    with pytest.raises(InputError) as error:
        load_foreign_checkpoint(path)
    assert_one_line_error(error, str(path), "refusing to unpickle global 'glow.Foo'")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_module_records_flatten_like_state_dict(legacy, tmp_path):
    with pytest.warns(FutureWarning):  # torch's legacy weight norm, as NVIDIA's code uses
        layers = nn.ModuleList([nn.utils.weight_norm(nn.Conv1d(2, 3, 1)), nn.Conv1d(3, 4, 3)])
    layers.register_buffer("kept", torch.arange(3.0))
    layers.register_buffer("dropped", torch.ones(2), persistent=False)
    path = tmp_path / "layers.pt"
    torch.save({"model": layers}, path, _use_new_zipfile_serialization=not legacy)
    record = load_foreign_checkpoint(path)["model"]
    assert record.class_name == "torch.nn.modules.container.ModuleList"
    assert record.state["_modules"]["0"].class_name == "torch.nn.modules.conv.Conv1d"
    state, expected = module_state_dict(record), layers.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert not is_nvidia_waveglow({"model": record})


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_plain_checkpoints_load_unchanged(legacy, tmp_path):
    state = {"module.a.weight": torch.randn(3, 2), "module.a.bias": torch.arange(3)}
    saved = {"state_dict": state, "config": {"n_flows": 12, "WN_config": {"n_layers": 8}}}
    path = tmp_path / "hub.pt"
    torch.save(saved, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_foreign_checkpoint(path)
    assert loaded["config"] == saved["config"]
    assert loaded["state_dict"].keys() == state.keys()
    assert all(torch.equal(loaded["state_dict"][k], state[k]) for k in state)
    assert not is_nvidia_waveglow(loaded)


@needs_goldens
def test_l0sg_checkpoints_load_as_with_torch_load():
    path = GOLDENS / "nanoflow-small-h8.pt"
    loaded, expected = load_foreign_checkpoint(path), torch.load(path, weights_only=True)
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded["model"][k], v) for k, v in expected["model"].items())
    assert not is_nvidia_waveglow(loaded)


@needs_goldens
@pytest.mark.parametrize("name", ["waveglow-small.pt", "waveglow-small-legacy.pt"])
def test_truncated_checkpoint_is_refused(name, tmp_path):
    data = (GOLDENS / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as error:
        load_foreign_checkpoint(path)
    assert_one_line_error(error, str(path), "not a readable PyTorch checkpoint")


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    text, wav, empty = tmp_path / "notes.pt", tmp_path / "speech.pt", tmp_path / "empty.pt"
    text.write_text("hello\nthis is not a checkpoint\n")
    shutil.copy(REPO / "app" / "examples" / "LJ050-0030.wav", wav)
    empty.write_bytes(b"")
    for path, problem in (
        (text, "not a PyTorch checkpoint (no torch.save header)"),
        (wav, "not a PyTorch checkpoint (no torch.save header)"),
        (empty, "empty file, not a checkpoint"),
        (tmp_path / "missing.pt", "no such checkpoint"),
    ):
        with pytest.raises(InputError) as error:
            load_foreign_checkpoint(path)
        assert_one_line_error(error, str(path), problem)
