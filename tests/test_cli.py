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
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vocoder import __version__
from vocoder.checkpoint import export_model
from vocoder.cli import COMMAND_HELP, COMMANDS, build_parser, main
from vocoder.errors import InputError
from vocoder.features import MelConfig
from vocoder.models import ModelConfig, build_model

REPO = Path(__file__).resolve().parents[1]

# What each command's usage line must offer: its positionals and main options.
KEY_OPTIONS = {
    "prepare": ["DATA_DIR", "--out", "--split", "--mel-preset", "--skip-bad", "--force"],
    "train": ["--config", "--out", "--resume", "--max-steps", "--force", "key.path=value"],
    "evaluate": ["--checkpoint", "--filelist", "--out", "--average", "--no-synthesis"],
    "synthesize": ["INPUT", "--out", "--model", "--sigma", "--seed", "--denoise", "--force"],
    "export": ["MODEL", "--out", "--precision", "--force"],
    "info": ["MODEL"],
    "models": ["NAME", "--cache-dir"],
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
def test_each_module_states_the_help_the_dispatcher_shows(name):
    assert importlib.import_module(f"vocoder.cli.{COMMANDS[name]}").HELP == COMMAND_HELP[name]


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
}


def bad_command(case: str, folder: Path, model: Path) -> tuple[list[str], Path, str]:
    """(argv, the file the error must name, the problem it must state) for `case`."""
    if case in SYNTHESIZE_CASES:
        name, content, problem = SYNTHESIZE_CASES[case]
        path = folder / name
        if isinstance(content, np.ndarray):
            np.save(path, content.astype(np.float32))
        elif content is not None:
            path.write_text(content)
        argv = ["synthesize", "--model", str(model), str(path), "--out", str(folder / "out")]
        return argv, path, problem
    missing = folder / "missing"
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
    }[case]


BAD_INPUT_CASES = [
    *SYNTHESIZE_CASES,
    "prepare-missing-folder",
    "info-missing-config",
    "evaluate-missing-filelist",
    "export-missing-checkpoint",
    "train-missing-config",
]


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_is_one_line_naming_the_file(case, tiny_model, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)  # what a user would also see on stderr
    argv, path, problem = bad_command(case, tmp_path, tiny_model)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {path}: {problem}") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert [r.getMessage() for r in caplog.records] == []
    assert not (tmp_path / "out").exists()  # nothing written, not even a folder


@pytest.mark.parametrize(
    "name, content, command",
    [("bad.pt", b"garbage", ["info"]), ("bad.yaml", b"model: [unclosed\n", ["info"])],
    ids=["corrupt-checkpoint", "invalid-yaml"],
)
def test_unreadable_files_are_one_line_too(name, content, command, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    assert main([*command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err


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
    from vocoder.pretrained import default_model_name

    name = default_model_name()
    assert main(["info", name]) == 0
    assert "parameters (inference)" in capsys.readouterr().out
    assert main(["info", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "model preset (" in err and f"pretrained model ({name}" in err


def test_other_exits_of_a_command(monkeypatch, capsys):
    module = importlib.import_module("vocoder.cli.info")

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", stopped)
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
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="vocoder")
    assert script.value == "vocoder.cli:main" and script.load() is main
