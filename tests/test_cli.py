"""The `vocoder` command as a whole: its help, version, usage errors and the one-line
`error: <file>: <problem>` contract every command keeps (tracebacks with --verbose only).

Each command's own behaviour is tested beside it (test_prepare, test_evaluate,
test_synthesize_cli, test_pretrained, test_app, test_trainer); these tests call
`vocoder.cli.main` in-process, and once run the real `python -m vocoder`.
"""

from __future__ import annotations

import argparse
import configparser
import importlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from vocoder import __version__
from vocoder.checkpoint import checkpoint_path, export_model, save_checkpoint
from vocoder.cli import COMMAND_HELP, COMMANDS, build_parser, describe_error, main
from vocoder.cli.models import summary_lines
from vocoder.config import to_dict
from vocoder.errors import InputError, remedy
from vocoder.features import MelConfig
from vocoder.models import ModelConfig, build_model, resolve_model_config
from vocoder.pretrained import default_model_name

REPO = Path(__file__).resolve().parents[1]

# What each command's usage line must offer: its positionals and main options.
KEY_OPTIONS = {
    "prepare": ["DATA_DIR", "--out", "--split", "--mel-preset", "--skip-bad", "--force"],
    "train": ["--config", "--out", "--resume", "--max-steps", "--force", "key.path=value"],
    "evaluate": ["--checkpoint", "--filelist", "--out", "--average", "--no-synthesis"],
    "synthesize": ["INPUT", "--out", "--model", "--sigma", "--seed", "--denoise", "--force"],
    "export": ["MODEL", "--out", "--precision", "--force"],
    "import": ["SRC", "--out", "--config", "--n-height", "--force"],
    "info": ["MODEL"],
    "models": ["NAME", "--cache-dir", "--download"],
    "demo": ["--host", "--port", "--model", "--device", "--max-upload-mb"],
}


@pytest.fixture(autouse=True)
def terminal_80_columns(monkeypatch):
    """argparse wraps help to $COLUMNS: 80, a common terminal, whatever runs the tests."""
    monkeypatch.setenv("COLUMNS", "80")


def exits(argv: list[str]) -> int:
    """The code argparse exits with (for --help, --version and usage errors)."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code


def test_help_lists_every_command_with_its_one_line_help(capsys):
    assert exits(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vocoder ") and "vocoder COMMAND --help" in out
    assert re.findall(r"^    (\S+)", out, re.MULTILINE) == list(COMMANDS)  # no more, in order
    for name, help in COMMAND_HELP.items():
        # on the command's own line, unwrapped, even for the longest name
        assert re.search(rf"^    {name} +{re.escape(help)}$", out, re.MULTILINE), name
    assert main([]) == 0  # no command: the same help
    assert capsys.readouterr().out == out


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_shows_its_usage_and_options(name, capsys):
    assert exits([name, "--help"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: vocoder {name} [-h] [-v]")
    assert description == COMMAND_HELP[name]
    for option in KEY_OPTIONS[name]:
        assert option in usage, option
    assert "-v, --verbose" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_explained_with_its_default(name):
    parser = build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[name]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help, f"{name} {label}: no help"
        if action.default not in (None, False, argparse.SUPPRESS) and not action.required:
            assert "default" in action.help, f"{name} {label}: default {action.default!r} unsaid"


@pytest.mark.parametrize(
    "command, spellings, dest",
    [
        (["evaluate", "--filelist", "t.txt"], ["--checkpoint", "--model"], "checkpoint"),
        (["models", "--download", "x"], ["--to", "--out"], "to"),
    ],
    ids=["evaluate-model", "models-out"],
)
def test_option_aliases_shared_with_other_commands(command, spellings, dest):
    """`--model` names the model and `--out` where things go in every command; the older
    spellings keep working."""
    parser = build_parser(command[0])
    values = {
        spelling: getattr(parser.parse_args([*command, spelling, "here"]), dest)
        for spelling in spellings
    }
    assert {str(v) for v in values.values()} == {"here"}, values


def test_version_is_the_package_version(capsys):
    assert exits(["--version"]) == 0
    assert capsys.readouterr().out == f"vocoder {__version__}\n"
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert __version__ == setup["metadata"]["version"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bogus"], "argument COMMAND: invalid choice: 'bogus' (choose from 'prepare',"),
        (["synthesize", "x.npy"], "the following arguments are required: --out"),
        (["info", "waveglow", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
    ids=["unknown-command", "missing-option", "unknown-option"],
)
def test_usage_errors_exit_the_argparse_way(argv, message, capsys):
    assert exits(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: vocoder") and message in err
    assert not re.search(r"^error: ", err, re.MULTILINE)  # not a VocoderError's line
    if argv[0] in ("info", "synthesize"):  # the command's own usage, not the top level's
        assert err.startswith(f"usage: vocoder {argv[0]} ") and f"vocoder {argv[0]}: error" in err


# ---- bad input: exit 2, one line on stderr naming the file, no traceback ----


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny NanoFlow (80 mels) exported as .safetensors + .json: loads in milliseconds."""
    torch.manual_seed(0)
    config = ModelConfig(
        family="nanoflow", n_flows=2, n_layers=2, n_group=8, channels=8, embedding_dim=8
    )
    weights, _ = export_model(
        build_model(config), MelConfig(), tmp_path_factory.mktemp("model") / "tiny"
    )
    return weights


def nan_mel() -> np.ndarray:
    mel = np.full((80, 20), -5.0)
    mel[3, :5] = np.nan
    mel[7, 0] = np.inf
    return mel


# case -> (input file name, its content (None: no such file), the problem stated)
SYNTHESIZE_CASES = {
    "missing-file": ("missing.npy", None, "no such file or folder"),
    "empty-npy": ("empty.npy", np.zeros((80, 0)), "empty mel (0 frames)"),
    "wrong-bins": ("bins.npy", np.zeros((60, 20)), "expected 80 mel bins, got shape (60, 20)"),
    "nan-mel": ("nan.npy", nan_mel(), "contains 6 NaN or infinite values"),
    "not-a-mel": ("notes.csv", "not a mel", "not a mel (.npy, .pt) or audio file"),
    # numpy's own words would be about pickles and allow_pickle, torch's a bare "101"
    "text-as-npy": ("text.npy", "hello world", "not a .npy file (no NumPy header)"),
    "text-as-pt": ("text.pt", "hello world", "not a mel file: neither a zip nor a pickle"),
    # centered reflect padding takes n_fft / 2 samples: torch's error named no file
    "short-audio": ("short.wav", np.zeros(512), "512 samples is too short for a mel"),
}


def bad_command(case: str, folder: Path, model: Path) -> tuple[list[str], Path, str]:
    """(argv, the file the error must name, the problem it must state) for `case`."""
    if case in OUTPUT_CASES:
        return output_command(case, folder, model)
    if case in SYNTHESIZE_CASES:
        name, content, problem = SYNTHESIZE_CASES[case]
        path = folder / name
        if path.suffix == ".wav":
            sf.write(path, content, 22050)
        elif isinstance(content, np.ndarray):
            np.save(path, content.astype(np.float32))
        elif content is not None:
            path.write_text(content)
        argv = ["synthesize", "--model", str(model), str(path), "--out", str(folder / "out")]
        return argv, path, problem
    missing = folder / "missing"
    smoke = REPO / "recipes" / "ljspeech" / "conf" / "smoke.yaml"
    return {
        "prepare-missing-folder": (
            ["prepare", str(missing), "--out", str(folder / "out")],
            missing,
            "no such folder",
        ),
        "info-missing-config": (
            ["info", str(missing.with_suffix(".yaml"))],
            missing.with_suffix(".yaml"),
            "no such file, and not a model preset",
        ),
        "evaluate-missing-filelist": (
            ["evaluate", "--checkpoint", str(model), "--filelist", str(missing.with_suffix(".txt"))]
            + ["--device", "cpu"],
            missing.with_suffix(".txt"),
            "no such filelist",
        ),
        "export-missing-checkpoint": (
            ["export", str(missing.with_suffix(".pt")), "--out", str(folder / "out" / "model")],
            missing.with_suffix(".pt"),
            "no such file",
        ),
        "train-missing-config": (
            ["train", "--config", str(missing.with_suffix(".yaml")), "--out", str(folder / "out")],
            missing.with_suffix(".yaml"),
            "no such config file",
        ),
        "train-config-is-a-folder": (
            ["train", "--config", str(folder), "--out", str(folder / "out")],
            folder,
            "is a folder, not a config file",
        ),
        "train-missing-data-folder": (  # three lines before, naming <data>/train.txt
            ["train", "--config", str(smoke), "--data", str(missing), "--out", str(folder / "out")],
            missing,
            "no such folder; vocoder prepare makes one",
        ),
        "prepare-a-file": (
            ["prepare", str(smoke), "--out", str(folder / "out")],
            smoke,
            "is a file; DATA_DIR is the dataset's folder",
        ),
        "evaluate-filelist-is-a-folder": (
            ["evaluate", "--checkpoint", str(model), "--filelist", str(folder), "--device", "cpu"],
            folder,
            "is a folder, not a filelist",
        ),
        "evaluate-mel-dir-is-a-file": (
            ["evaluate", "--checkpoint", str(model), "--filelist", str(smoke), "--device", "cpu"]
            + ["--mel-dir", str(smoke)],
            smoke,
            "is a file; --mel-dir takes a folder",
        ),
    }[case]


def output_command(case: str, folder: Path, model: Path) -> tuple[list[str], Path, str]:
    """An output that cannot be written (under a file, say), checked before any work."""
    blocker = folder / "blocker"  # a file where a folder is wanted
    blocker.write_text("a file, not a folder")
    mel = folder / "good.npy"
    np.save(mel, np.full((80, 20), -5.0, np.float32))
    wav = folder / "clip.wav"
    sf.write(wav, np.zeros(22050, np.float32), 22050)
    filelist = folder / "test.txt"
    filelist.write_text(f"{wav}\n")
    empty = folder / "empty.txt"
    empty.write_text("# no files\n")
    under = f"cannot write here: {blocker} is not a folder"
    smoke = REPO / "recipes" / "ljspeech" / "conf" / "smoke.yaml"
    evaluate = ["evaluate", "--checkpoint", str(model), "--device", "cpu", "--filelist"]
    return {
        "synthesize-out-under-a-file": (
            ["synthesize", "--model", str(model), str(mel), "--out", str(blocker / "out")],
            blocker / "out",
            under,
        ),
        "synthesize-output-is-a-folder": (
            ["synthesize", "--model", str(model), str(mel), "--out", str(folder / "dest")],
            folder / "dest" / "good.wav",
            "is a folder",
        ),
        "export-out-under-a-file": (
            ["export", str(model), "--out", str(blocker / "sub" / "model")],
            blocker / "sub",
            under,
        ),
        "prepare-out-under-a-file": (
            ["prepare", str(folder), "--out", str(blocker / "prepared")],
            blocker / "prepared",
            under,
        ),
        "evaluate-out-under-a-file": (
            [*evaluate, str(filelist), "--out", str(blocker / "eval" / "report.json")],
            blocker / "eval",
            under,
        ),
        "evaluate-out-is-a-folder": (
            [*evaluate, str(filelist), "--out", str(folder)],
            folder,
            "is a folder; --out takes the report's file",
        ),
        "evaluate-empty-filelist": (
            [*evaluate, str(empty)],
            empty,
            "the filelist names no files",
        ),
        "evaluate-missing-mel-dir": (
            [*evaluate, str(filelist), "--mel-dir", str(folder / "mels")],
            folder / "mels",
            "no such folder (--mel-dir)",
        ),
        "train-out-under-a-file": (
            ["train", "--config", str(smoke), "--data", str(folder), "--out", str(blocker / "r")],
            blocker / "r",
            under,
        ),
    }[case]


OUTPUT_CASES = [
    "synthesize-out-under-a-file",
    "synthesize-output-is-a-folder",
    "export-out-under-a-file",
    "prepare-out-under-a-file",
    "evaluate-out-under-a-file",
    "evaluate-out-is-a-folder",
    "evaluate-empty-filelist",
    "evaluate-missing-mel-dir",
    "train-out-under-a-file",
]

BAD_INPUT_CASES = [
    *SYNTHESIZE_CASES,
    "prepare-missing-folder",
    "info-missing-config",
    "evaluate-missing-filelist",
    "export-missing-checkpoint",
    "train-missing-config",
    "train-config-is-a-folder",
    "train-missing-data-folder",
    "prepare-a-file",
    "evaluate-filelist-is-a-folder",
    "evaluate-mel-dir-is-a-file",
    *OUTPUT_CASES,
]


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_is_one_line_naming_the_file(case, tiny_model, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)  # what a user would also see on stderr
    argv, path, problem = bad_command(case, tmp_path, tiny_model)
    if case == "synthesize-output-is-a-folder":
        path.mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {path}: {problem}") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert [r.getMessage() for r in caplog.records] == []
    assert not (tmp_path / "out").exists()  # nothing written, not even a folder
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "name, content, command, problem",
    [
        ("bad.pt", b"garbage", ["info"], "not a PyTorch checkpoint (no torch.save header)"),
        ("bad.yaml", b"model: [unclosed\n", ["info"], "not valid YAML/JSON (expected ','"),
        ("utf16.yaml", b"\xff\xfe{", ["info"], "not a text file (byte 0 is not UTF-8)"),
        (
            "utf16.yaml",
            b"\xff\xfe{",
            ["train", "--out", "run", "--config"],
            "not a text file (byte 0 is not UTF-8)",
        ),
    ],
    ids=["corrupt-checkpoint", "invalid-yaml", "not-utf8-info", "not-utf8-train-config"],
)
def test_unreadable_files_are_one_line_too(name, content, command, problem, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    assert main([*command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: {problem}") and err.count("\n") == 1, err


@pytest.mark.parametrize("case", ["nan-mel", "prepare-missing-folder"])
@pytest.mark.parametrize("flag", ["--verbose", "-v"])
@pytest.mark.parametrize("position", ["after-command", "before-command"])
def test_verbose_adds_the_traceback(case, flag, position, tiny_model, tmp_path, capsys):
    argv, path, problem = bad_command(case, tmp_path, tiny_model)
    assert main(argv) == 2
    plain = capsys.readouterr().err
    verbose_argv = [argv[0], flag, *argv[1:]] if position == "after-command" else [flag, *argv]
    assert main(verbose_argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert f"vocoder.errors.InputError: {path}: {problem}" in err
    assert err.endswith(plain)  # then the same one line as without --verbose


def test_info_takes_a_pretrained_name_and_lists_every_kind_on_a_bad_one(capsys):
    name = default_model_name()
    assert main(["info", name]) == 0
    assert "parameters (inference)" in capsys.readouterr().out
    assert main(["info", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "model preset (" in err and f"pretrained model ({name}" in err


def test_info_takes_a_run_folder_and_shows_rate_and_hop(tmp_path, capsys):
    config = ModelConfig(family="waveflow", n_flows=2, n_layers=2, n_group=8, channels=8)
    run = tmp_path / "run"
    state = {
        "config": {"model": to_dict(config), "features": to_dict(MelConfig())},
        "model": build_model(config).state_dict(),
        "step": 3,
    }
    save_checkpoint(checkpoint_path(run, 3), state)
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^audio +22050 Hz, hop 256 samples \(11\.6 ms per mel frame\)$", out, re.M)
    assert "parameters (training)" in out
    # before its first checkpoint, a run folder has its config.yaml
    (run / "checkpoints" / "step-00000003.pt").unlink()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": to_dict(config)}))
    assert main(["info", str(run)]) == 0
    assert "22050 Hz, hop 256" in capsys.readouterr().out


def test_torch_hint_to_unpickle_never_leaks(tmp_path, capsys):
    mel = tmp_path / "mel.pt"
    torch.save({"mel": np.zeros((80, 10), dtype=np.float32)}, mel)  # a numpy array: a pickle
    assert main(["synthesize", str(mel), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "mel.pt: not a readable mel file" in err and "never unpickled" in err
    checkpoint = tmp_path / "model.pt"
    torch.save({"config": {"model": np.zeros(3)}}, checkpoint)
    with pytest.raises(InputError) as e:
        resolve_model_config(checkpoint)
    for message in (err, str(e.value)):
        assert "weights_only" not in message and "will likely succeed" not in message


@pytest.mark.parametrize(
    "option, value, problem",
    [
        ("--chunk-seconds", "inf", "--chunk-seconds must be a finite number above 0, got inf"),
        ("--chunk-seconds", "0", "--chunk-seconds must be a finite number above 0, got 0.0"),
        ("--denoise", "inf", "--denoise must be a finite number >= 0, got inf"),
        ("--denoise", "nan", "--denoise must be a finite number >= 0, got nan"),
        ("--device", "tpu", "--device tpu: unknown device 'tpu'; use auto, cpu or cuda"),
        ("--precision", "fp16 --device cpu", "--precision fp16 is for GPUs; on the CPU use"),
        ("--db-normalization", "symmetric=true", "--db-normalization applies to --mel-format"),
    ],
)
def test_synthesize_options_are_checked_before_any_work(option, value, problem, tmp_path, capsys):
    argv = ["synthesize", str(tmp_path / "a.npy"), "--out", str(tmp_path / "out")]
    assert main([*argv, option, *value.split()]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_info_refuses_a_config_without_model_settings(tmp_path, capsys):
    for name, text in [("empty.json", "{}"), ("empty.yaml", "model: {}\n")]:
        path = tmp_path / name
        path.write_text(text)  # every field has a default: this would describe a made-up model
        assert main(["info", str(path)]) == 2
        assert capsys.readouterr().err == f"error: {path}: no model settings in it\n"


def test_other_exits_of_a_command(monkeypatch, capsys):
    module = importlib.import_module("vocoder.cli.info")

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", stopped)
    assert main(["info", "waveglow"]) == 130
    assert capsys.readouterr().err == "interrupted\n"

    def interrupted_while_importing(command):  # Ctrl-C while torch is being imported
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("vocoder.cli.build_parser", interrupted_while_importing)
        assert main(["info", "waveglow"]) == 130
    assert capsys.readouterr().err == "interrupted\n"

    monkeypatch.setattr(module, "run", lambda args: 3)
    assert main(["info", "waveglow"]) == 3  # a command's own code passes through
    monkeypatch.setattr(module, "run", lambda args: None)
    assert main(["info", "waveglow"]) == 0

    def broken(args):
        raise ValueError("a bug, not a user's mistake")

    monkeypatch.setattr(module, "run", broken)
    with pytest.raises(ValueError, match="a bug"):  # not hidden behind a one-line error
        main(["info", "waveglow"])

    def refused(args):
        raise InputError("some.file", "a user's mistake")

    monkeypatch.setattr(module, "run", refused)
    assert main(["info", "waveglow"]) == 2
    assert capsys.readouterr().err == "error: some.file: a user's mistake\n"

    def disk_full(args):  # the operating system's refusals are one line too
        raise OSError(28, "No space left on device", "out/a.wav")

    monkeypatch.setattr(module, "run", disk_full)
    line = "error: out/a.wav: no space left on device\n"
    assert main(["info", "waveglow"]) == 2
    assert capsys.readouterr().err == line
    assert main(["info", "-v", "waveglow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith(line)


# ---- what each command accepts, and what it leaves behind when it fails ----


def test_models_details_print_nested_figures_one_per_line(capsys):
    summary = {"ll": 4.79, "griffin_lim": {"stoi": 0.97, "pesq_wb": 3.3}, "split": "test"}
    assert summary_lines(summary) == [
        ("ll", "4.79"),
        ("griffin_lim.stoi", "0.97"),
        ("griffin_lim.pesq_wb", "3.3"),
        ("split", "test"),
    ]
    assert main(["models", default_model_name()]) == 0
    assert "{" not in capsys.readouterr().out  # no printed dicts


@pytest.mark.parametrize(
    "config, parameters",
    [("ljspeech/conf/nanoflow.yaml", "2,802,002"), ("custom_voice/conf/smoke.yaml", "30,886")],
)
def test_info_reads_a_recipes_experiment_config(config, parameters, capsys):
    # `model: {preset: NAME, ...}`: the preset, with the config's own keys over it
    assert main(["info", str(REPO / "recipes" / config)]) == 0
    assert re.search(rf"^parameters \(inference\) +{parameters}$", capsys.readouterr().out, re.M)


@pytest.mark.parametrize(
    "config, audio",
    [
        ("waveflow-44k-hop512.yaml", "44100 Hz, hop 512 samples (11.6 ms per mel frame)"),
        ("waveflow-24k-hop300.yaml", "24000 Hz, hop 300 samples (12.5 ms per mel frame)"),
    ],
)
def test_info_takes_an_experiment_configs_rate_and_hop_from_its_features(config, audio, capsys):
    assert main(["info", str(REPO / "recipes" / "custom_voice" / "conf" / config)]) == 0
    assert re.search(rf"^audio +{re.escape(audio)}$", capsys.readouterr().out, re.M)


def test_info_reads_an_exports_json_as_its_model(tiny_model, capsys):
    assert main(["info", str(tiny_model.with_suffix(".json"))]) == 0
    assert re.search(r"^family +nanoflow", capsys.readouterr().out, re.M)


def test_info_checks_an_experiment_config_whole_as_train_does(tmp_path, capsys):
    config = yaml.safe_load((REPO / "recipes" / "custom_voice" / "conf" / "smoke.yaml").read_text())
    config["train"]["lrr"] = 0.1
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(config))
    assert main(["info", str(tmp_path / "typo.yaml")]) == 2
    err = capsys.readouterr().err
    assert "lrr" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("out", ["models", "new/"])
def test_export_into_a_folder_names_the_file_after_the_model(out, tiny_model, tmp_path, capsys):
    (tmp_path / "models").mkdir()
    assert main(["export", str(tiny_model), "--out", f"{tmp_path}/{out}"]) == 0
    folder = tmp_path / out.rstrip("/")
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.json", "tiny.safetensors"]
    assert not list(tmp_path.glob("*.safetensors"))  # not models.safetensors beside it
    assert f"wrote {folder / 'tiny.safetensors'}" in capsys.readouterr().out


def test_evaluate_never_writes_its_report_over_an_input(tiny_model, tmp_path, capsys):
    listing = tmp_path / "list.json"
    listing.write_text("a.wav\n")
    model_json = tiny_model.with_suffix(".json")
    kept = model_json.read_bytes()
    for out, problem in [(listing, "the --filelist"), (model_json, "the --checkpoint's JSON")]:
        argv = ["evaluate", "--checkpoint", str(tiny_model), "--filelist", str(listing)]
        assert main([*argv, "--out", str(out), "--no-synthesis", "--force"]) == 2
        assert f"{out}: is {problem}; choose another --out" in capsys.readouterr().err
    assert listing.read_text() == "a.wav\n" and model_json.read_bytes() == kept


def test_evaluate_refuses_a_bad_device_in_one_line(tiny_model, tmp_path, capsys):
    argv = ["evaluate", "--checkpoint", str(tiny_model), "--filelist", str(tmp_path / "t.txt")]
    assert main([*argv, "--device", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --device bogus: unknown device 'bogus'; use auto, cpu or cuda\n"


def test_evaluate_takes_a_pretrained_name(tmp_path, capsys):
    filelist = tmp_path / "test.txt"
    filelist.write_text(f"{REPO / 'app' / 'examples' / 'LJ050-0030.wav'}\n")
    argv = ["evaluate", "--checkpoint", default_model_name(), "--filelist", str(filelist)]
    report = tmp_path / "report.json"
    assert main([*argv, "--no-synthesis", "--device", "cpu", "--out", str(report)]) == 0
    assert "test LL" in capsys.readouterr().out
    info = json.loads(report.read_text())["info"]  # the name asked for, and the file read
    assert info["checkpoint_given"] == default_model_name()
    assert info["checkpoint"].endswith(f"{default_model_name()}.safetensors")


def test_a_failed_prepare_leaves_no_folder(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.wav").write_bytes(b"")  # the first file is bad: nothing was prepared
    assert main(["prepare", str(data), "--out", str(tmp_path / "prepared")]) == 2
    assert "a.wav: empty file" in capsys.readouterr().err
    assert not (tmp_path / "prepared").exists()  # not even the unfinished-run marker


def test_a_failed_train_leaves_no_run_folder(tmp_path, capsys):
    data = tmp_path / "data"  # not a `vocoder prepare` folder
    data.mkdir()
    smoke = REPO / "recipes" / "ljspeech" / "conf" / "smoke.yaml"
    argv = ["train", "--config", str(smoke), "--data", str(data), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "holds no train.txt or manifest.json: not a folder vocoder prepare made" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


# ---- the real entry points ----


def test_python_dash_m_vocoder_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "vocoder", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: vocoder [-h] [--version] COMMAND ...")
    assert all(f"    {name}" in result.stdout for name in COMMANDS)


def test_the_console_script_is_the_dispatcher():
    """It ends as `python -m vocoder` does (`end_process`: a torchrun process skips the
    interpreter's teardown, where gloo's threads could abort it)."""
    from importlib.metadata import entry_points

    from vocoder.cli import entry

    (script,) = entry_points(group="console_scripts", name="vocoder")
    assert script.value == "vocoder.cli:entry" and script.load() is entry


def test_a_bug_ends_a_torchrun_process_with_its_traceback_and_status_1(tmp_path):
    """A process of a torchrun job ends without the interpreter's teardown (where gloo's
    threads could abort it): a bug's traceback and status are still what Python's are."""
    mark = tmp_path / "torn-down"
    script = (
        f"import atexit, pathlib, vocoder.cli as c\n"
        f"atexit.register(pathlib.Path({str(mark)!r}).touch)\n"
        "c.main = lambda: 1 / 0\nc.entry()\n"
    )
    for world, torn_down in (("1", True), ("2", False)):
        done = subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "WORLD_SIZE": world},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 1, (world, done.stderr)
        assert done.stderr.rstrip().endswith("ZeroDivisionError: division by zero"), world
        assert mark.exists() == torn_down, world
        mark.unlink(missing_ok=True)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_memory_stays_with_the_process_after_keep_freed_memory():
    probe = """
import sys, torch
from vocoder.cli.allocator import keep_freed_memory
tuned = sys.argv[1] == "1" and keep_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
x = torch.ones(64 * 2**20)  # 256 MB, touched
before = rss_mb()
del x
print(tuned, before - rss_mb())
"""
    freed = {}
    for tuned in ("0", "1"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        done = subprocess.run(
            [sys.executable, "-c", probe, tuned], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        applied, released = done.stdout.split()
        assert applied == str(tuned == "1")
        freed[tuned] = float(released)
    assert freed["0"] > 200  # glibc unmaps a big block on free...
    assert freed["1"] < 50  # ...unless told to keep it for the next tensor


def test_remedies_are_flags_in_the_cli_and_settings_in_the_library():
    error = InputError(
        "exp/run",
        "is not empty",
        [remedy("to continue its run", resume=True), remedy("to start over", force=True)],
    )
    assert (
        str(error)
        == "exp/run: is not empty; set resume=True to continue its run or force=True to start over"
    )
    assert describe_error(error) == (
        "exp/run: is not empty; pass --resume to continue its run or --force to start over"
    )
    stats = InputError(
        "m.npy", "looks mean-variance normalized", [remedy(mel_format="meanvar", stats="FILE")]
    )
    assert describe_error(stats).endswith("; pass --mel-format meanvar --stats FILE")
    # the library's `overwrite` is --force in every command
    exists = InputError(
        "m.safetensors", "already exists", [remedy("to replace it", overwrite=True)]
    )
    assert str(exists) == "m.safetensors: already exists; set overwrite=True to replace it"
    assert describe_error(exists) == "m.safetensors: already exists; pass --force to replace it"
    key = InputError("data", "no mels", [remedy(**{"data.mel_dir": "DIR"})])
    assert describe_error(key) == "data: no mels; set data.mel_dir: DIR in the config"


def test_a_reader_gone_from_stdout_ends_the_command_quietly():
    """`vocoder models | head -1`: no "error: broken pipe", no traceback at exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vocoder", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # the reader is gone before the first line is written
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""
