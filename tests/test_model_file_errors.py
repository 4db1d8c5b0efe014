"""Model files that cannot be used, through the commands that read them: one line naming
the file, exit 2, never a stack trace or torch's hint to unpickle (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_checkpoint import checkpoint_state, flip_a_byte, tiny_model

from vocoder.checkpoint import export_model, save_checkpoint
from vocoder.cli import main
from vocoder.features import MelConfig

MEL = np.full((80, 12), -5.0, dtype=np.float32)


def model_file(case: str, folder) -> tuple:
    """(the file, a phrase its error must hold)."""
    model = tiny_model()
    if case == "checkpoint-of-another-shape":
        state = checkpoint_state(model, 3)
        state["config"]["model"]["channels"] = 16  # the weights have 8
        return save_checkpoint(folder / "wide.pt", state), "has shape (8,), the model's is (16,)"
    if case == "export-of-another-shape":
        weights, meta = export_model(model, MelConfig(), folder / "wide")
        document = json.loads(meta.read_text())
        document["model"]["channels"] = 16
        meta.write_text(json.dumps(document))
        return weights, "has shape (8,), the model's is (16,)"
    if case == "flipped-byte":
        path = save_checkpoint(folder / "flipped.pt", checkpoint_state(model, 3))
        flip_a_byte(path)
        return path, "CRC"
    if case == "pickled-object":
        path = folder / "pickled.pt"
        torch.save({"config": {"model": np.zeros(3)}, "model": {}, "step": 1}, path)
        return path, "unpickl"
    raise AssertionError(case)


def reading(command: str, model: Path, folder: Path) -> list[str]:
    """The command line of `command` (info, or synthesize of a mel in `folder`) on `model`."""
    if command == "info":
        return ["info", str(model)]
    np.save(folder / "mel.npy", MEL)
    return [
        "synthesize",
        "--model",
        str(model),
        str(folder / "mel.npy"),
        "--out",
        str(folder / "out"),
    ]


CASES = ["checkpoint-of-another-shape", "export-of-another-shape", "flipped-byte", "pickled-object"]


@pytest.mark.parametrize("command", ["info", "synthesize"])
@pytest.mark.parametrize("case", CASES)
def test_a_model_file_that_cannot_load_is_one_line(case, command, tmp_path, capsys):
    path, phrase = model_file(case, tmp_path)
    assert main(reading(command, path, tmp_path)) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err
    assert phrase in err, err
    assert "weights_only" not in err and "will likely succeed" not in err
    assert out == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (b"\xff\xfe{}", "not a text file (byte 0 is not UTF-8)"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"model": ', "not valid JSON"),
        (None, "expected its config beside it in wide.json"),
    ],
)
@pytest.mark.parametrize("command", ["info", "synthesize"])
def test_an_export_whose_json_is_damaged_is_one_line_naming_it(
    damage, phrase, command, tmp_path, capsys
):
    weights, meta = export_model(tiny_model(), MelConfig(), tmp_path / "wide")
    if damage is None:
        meta.unlink()
    else:
        meta.write_bytes(damage)
    assert main(reading(command, weights, tmp_path)) == 2
    _, err = capsys.readouterr()
    named = weights if damage is None else meta
    assert err.startswith(f"error: {named}: ") and err.count("\n") == 1, err
    assert phrase in err, err
