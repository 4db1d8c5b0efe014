"""Checkpoints and exports: atomic writes, pruning, averaging, one loader for every kind."""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch

from vocoder.checkpoint import (
    average_checkpoints,
    capture_rng_state,
    checkpoint_path,
    export_model,
    latest_checkpoint,
    list_checkpoints,
    load_averaged_model,
    load_checkpoint,
    load_model,
    restore_rng_state,
    save_checkpoint,
)
from vocoder.config import to_dict
from vocoder.errors import InputError
from vocoder.features import MelConfig
from vocoder.inference.export import export_inference_model
from vocoder.models import ModelConfig, build_model, resolve_model_config
from vocoder.train.retention import non_finite_tensor, prune_checkpoints

TINY = dict(n_flows=2, n_layers=2, n_group=8, channels=8, embedding_dim=8)


def tiny_model(family: str = "waveflow", seed: int = 0, **changes):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(family=family, **{**TINY, **changes}))
    # The final projections start at zero (an identity flow); perturb every weight so
    # that copies and averages are told apart.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def checkpoint_state(model, step: int, ema=None) -> dict:
    return {
        "config": {"model": to_dict(model.config), "features": to_dict(MelConfig())},
        "model": model.state_dict(),
        "ema": ema,
        "step": step,
        "epoch": 0,
        "batch_in_epoch": step,
    }


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, 2048, generator=g), torch.randn(1, 80, 8, generator=g)


def test_checkpoint_round_trip_and_listing(tmp_path):
    model = tiny_model()
    for step in (5, 20, 10):
        save_checkpoint(checkpoint_path(tmp_path, step), checkpoint_state(model, step))
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-00000005.pt", "step-00000010.pt", "step-00000020.pt"]
    assert latest_checkpoint(tmp_path).name == "step-00000020.pt"
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["step"] == 20 and state["format"] == "vocoder-checkpoint"
    for name, tensor in model.state_dict().items():
        assert torch.equal(state["model"][name], tensor)
    # the models package reads the same file
    assert resolve_model_config(latest_checkpoint(tmp_path)) == model.config
    # no temporary files are left behind
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_save_refuses_overwrite_and_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint(path, checkpoint_state(tiny_model(), 1))
    before = path.read_bytes()
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_checkpoint(path, checkpoint_state(tiny_model(), 1))

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(InputError, match="step-00000001.pt: could not be written: disk full"):
        save_checkpoint(path, checkpoint_state(tiny_model(seed=3), 1), overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_prune_keeps_the_newest(tmp_path):
    model = tiny_model()
    for step in range(1, 8):
        save_checkpoint(checkpoint_path(tmp_path, step), checkpoint_state(model, step))
    removed = prune_checkpoints(tmp_path, keep_last=3)
    assert len(removed) == 4
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000005.pt",
        "step-00000006.pt",
        "step-00000007.pt",
    ]
    assert prune_checkpoints(tmp_path, keep_last=0) == []


def test_corrupt_or_missing_files_raise_input_error(tmp_path):
    path = save_checkpoint(checkpoint_path(tmp_path, 1), checkpoint_state(tiny_model(), 1))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.pt: not a readable checkpoint: a truncated or"):
        load_model(truncated)
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.pt")
    weights, meta = export_model(tiny_model(), MelConfig(), tmp_path / "copied")
    weights.unlink()  # the JSON copied without its weights
    with pytest.raises(InputError) as e:
        load_model(meta)
    assert str(e.value) == f"{meta}: its weights copied.safetensors are missing beside it"
    reference_config = tmp_path / "waveflow-h16-r64.json"  # the L0SG config, not a model
    reference_config.write_text('{"waveflow_config": {"n_flow": 8}}')
    with pytest.raises(InputError) as e:
        load_model(reference_config)
    assert str(e.value) == (
        f"{reference_config}: no weights beside it (waveflow-h16-r64.safetensors): "
        "not a model's JSON"
    )
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(InputError, match="notes.pt: not a checkpoint: neither a zip nor") as e:
        load_model(text)
    assert "weights_only" not in str(e.value)  # torch's hint to unpickle everything is unsafe
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(InputError, match="not a vocoder training checkpoint"):
        load_model(foreign)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without checkpoints"):
        load_model(tmp_path / "empty")


def flip_a_byte(path, offset_from_end=None):
    """Invert one byte in the middle of a file's data (or `offset_from_end` bytes before
    its end), as a bad disk or transfer would."""
    data = bytearray(path.read_bytes())
    where = len(data) // 2 if offset_from_end is None else len(data) - offset_from_end
    data[where] ^= 0xFF
    path.write_bytes(bytes(data))


def test_prune_never_deletes_the_last_finite_checkpoint(tmp_path):
    model = tiny_model()
    save_checkpoint(checkpoint_path(tmp_path, 1), checkpoint_state(model, 1))
    poisoned = tiny_model()
    with torch.no_grad():
        next(poisoned.parameters())[0].fill_(float("nan"))
    for step in (2, 3, 4):
        save_checkpoint(checkpoint_path(tmp_path, step), checkpoint_state(poisoned, step))
    assert non_finite_tensor(load_checkpoint(checkpoint_path(tmp_path, 4))).startswith("model.")
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step-00000002.pt"]
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000001.pt",
        "step-00000003.pt",
        "step-00000004.pt",
    ]
    # once a finite checkpoint is among the newest, the old one goes as usual
    save_checkpoint(checkpoint_path(tmp_path, 5), checkpoint_state(model, 5))
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004.pt", "step-00000005.pt"]


def test_flipped_bytes_in_a_checkpoint_are_caught(tmp_path):
    model = tiny_model()
    path = save_checkpoint(checkpoint_path(tmp_path, 1), checkpoint_state(model, 1))
    data = path.read_bytes()
    # a byte inside the largest tensor's stored data: torch alone would load it silently
    info = max(
        (i for i in zipfile.ZipFile(path).infolist() if "/data/" in i.filename),
        key=lambda i: i.file_size,
    )
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 :][:4])
    start = info.header_offset + 30 + name_length + extra_length
    corrupt = bytearray(data)
    corrupt[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    assert torch.load(path, weights_only=True)["step"] == 1  # what torch does without a check
    with pytest.raises(InputError, match=r"step-00000001.pt: corrupt checkpoint: record .* CRC"):
        load_model(path)
    with pytest.raises(InputError, match="corrupt checkpoint"):
        load_model(tmp_path)  # a run folder: its latest checkpoint
    with pytest.raises(InputError, match="corrupt checkpoint"):
        resolve_model_config(path)


def test_flipped_bytes_in_an_export_are_caught_and_old_exports_load(tmp_path):
    weights, meta = export_model(tiny_model(), MelConfig(), tmp_path / "voc")
    assert (
        json.loads(meta.read_text())["weights_sha256"]
        == hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    flip_a_byte(weights, offset_from_end=10)
    safetensors.torch.load_file(str(weights))  # loads without a word on its own
    with pytest.raises(InputError, match="voc.safetensors: corrupt: its sha256 differs"):
        load_model(weights)
    flip_a_byte(weights, offset_from_end=10)  # back as it was
    document = json.loads(meta.read_text())
    del document["weights_sha256"]  # an export made before the record existed
    meta.write_text(json.dumps(document))
    assert load_model(weights)[1].model == tiny_model().config


def test_shape_mismatch_is_one_line_naming_the_tensor(tmp_path):
    weights, meta = export_model(tiny_model(), MelConfig(), tmp_path / "voc")
    document = json.loads(meta.read_text())
    document["model"]["channels"] = 16
    meta.write_text(json.dumps(document))
    with pytest.raises(InputError) as e:
        load_model(weights)
    message = str(e.value)
    assert "\n" not in message and len(message) < 300, message
    assert re.search(
        r"weights do not fit .*: \S+ has shape \(8,.*\), the model's is \(16,.*\) "
        r"\(and \d+ more\)$",
        message,
    )


@pytest.mark.parametrize("family", ["waveflow", "nanoflow"])
def test_export_training_form_round_trip(tmp_path, family):
    model = tiny_model(family)
    weights, meta = export_model(model, MelConfig(), tmp_path / "voc", {"step": 7, "note": "x"})
    assert weights.name == "voc.safetensors" and meta.name == "voc.json"
    document = json.loads(meta.read_text())
    assert set(document) >= {"model", "features", "metadata"}
    assert document["metadata"]["note"] == "x" and document["form"] == "training"
    assert weights.read_bytes()[:8] != b"PK\x03\x04"  # safetensors, not a pickle zip
    loaded, info = load_model(weights)
    assert info.model == model.config and info.features == MelConfig() and info.step == 7
    audio, mel = batch()
    with torch.no_grad():
        assert torch.allclose(loaded.log_prob(audio, mel), model.eval().log_prob(audio, mel))
    # the .json path works too, and the models package agrees on the config
    assert load_model(meta)[1].model == model.config
    assert resolve_model_config(weights) == model.config


def test_export_inference_form_round_trip(tmp_path):
    model = tiny_model("nanoflow")
    inference = model.to_inference_form()
    weights, _ = export_model(inference, MelConfig(), tmp_path / "voc")
    loaded, info = load_model(weights)
    assert info.form == "inference" and loaded.inference_form
    mel = batch()[1]
    with torch.no_grad():
        a = inference.infer(mel, sigma=0.8, generator=torch.Generator().manual_seed(0))
        b = loaded.infer(mel, sigma=0.8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-6)


def test_export_refuses_overwrite_and_bad_files_are_reported(tmp_path):
    model = tiny_model()
    weights, meta = export_model(model, MelConfig(), tmp_path / "voc")
    with pytest.raises(InputError, match="refusing to overwrite"):
        export_model(model, MelConfig(), tmp_path / "voc")
    export_model(model, MelConfig(), tmp_path / "voc", overwrite=True)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(InputError, match="voc.safetensors: corrupt: its sha256 differs"):
        load_model(weights)
    document = json.loads(meta.read_text())
    del document["weights_sha256"]  # as in an export made before the record existed
    meta.write_text(json.dumps(document))
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_model(weights)
    meta.unlink()
    with pytest.raises(InputError, match="expected its config beside it"):
        load_model(weights)


def test_ema_weights_preferred(tmp_path):
    model, other = tiny_model(seed=0), tiny_model(seed=1)
    path = save_checkpoint(
        checkpoint_path(tmp_path, 3), checkpoint_state(model, 3, ema=other.state_dict())
    )
    auto, info = load_model(path)
    assert info.weights == "ema"
    assert all(torch.equal(auto.state_dict()[k], v) for k, v in other.state_dict().items())
    plain, info = load_model(path, weights="model")
    assert info.weights == "model"
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in model.state_dict().items())


def test_an_export_says_which_weights_it_holds_and_refuses_the_other(tmp_path):
    """`--weights ema` on an export was silently ignored (the trained weights scored)."""
    model, other = tiny_model(seed=0), tiny_model(seed=1)
    path = save_checkpoint(
        checkpoint_path(tmp_path, 3), checkpoint_state(model, 3, ema=other.state_dict())
    )
    weights, _ = export_inference_model(path, tmp_path / "exported")  # auto: the EMA ones
    _, info = load_model(weights)
    assert info.weights == "ema" and load_model(weights, weights="ema")[1].weights == "ema"
    with pytest.raises(InputError, match="an export holds one set of weights, its EMA ones"):
        load_model(weights, weights="model")
    no_ema = save_checkpoint(checkpoint_path(tmp_path / "r2", 1), checkpoint_state(model, 1))
    trained = export_inference_model(no_ema, tmp_path / "trained")[0]
    with pytest.raises(InputError, match=r"its trained \(not EMA\) ones; ema weights"):
        load_model(trained, weights="ema")
    # an export that records nothing (made before it was recorded) is taken as it is
    older = export_model(model, MelConfig(), tmp_path / "older")[0]
    assert load_model(older, weights="ema")[1].weights == "model"
    # a re-export keeps what its source recorded, and claims nothing for an older one
    again = export_inference_model(weights, tmp_path / "again")[0]
    assert load_model(again)[1].metadata["weights"] == "ema"
    assert (
        "weights" not in load_model(export_inference_model(older, tmp_path / "o2")[0])[1].metadata
    )


def test_average_checkpoints(tmp_path):
    models = [tiny_model(seed=s) for s in range(3)]
    paths = [
        save_checkpoint(checkpoint_path(tmp_path, i + 1), checkpoint_state(m, i + 1))
        for i, m in enumerate(models)
    ]
    averaged = average_checkpoints(paths)
    for name, tensor in averaged.items():
        expected = sum(m.state_dict()[name].double() for m in models) / 3
        assert torch.allclose(tensor.double(), expected, atol=1e-6), name
    model, info = load_averaged_model(paths)
    assert info.weights == "average" and len(info.metadata["averaged"]) == 3
    assert all(torch.allclose(model.state_dict()[k], v) for k, v in averaged.items())
    other = save_checkpoint(tmp_path / "other.pt", checkpoint_state(tiny_model(channels=16), 9))
    with pytest.raises(InputError, match="do not match|shape"):
        average_checkpoints([paths[0], other])


def test_rng_state_round_trip():
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)  # move every generator on
    restore_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == again[0] and expected[1] == again[1]
    assert torch.equal(expected[2], again[2])


def test_an_export_may_sit_beside_its_checkpoint_but_never_replace_its_model(tmp_path):
    checkpoint = tmp_path / "step-00000001.pt"
    save_checkpoint(checkpoint, checkpoint_state(tiny_model(), 1))
    weights, meta = export_inference_model(checkpoint, tmp_path / "step-00000001")
    assert (weights.name, meta.name) == ("step-00000001.safetensors", "step-00000001.json")
    for stem in ("step-00000001", "step-00000001.json"):  # an export over its own model
        with pytest.raises(InputError, match="is a file this model is made from"):
            export_inference_model(weights, tmp_path / stem, overwrite=True)
    assert load_model(weights)[0].inference_form
