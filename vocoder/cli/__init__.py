"""The `vocoder` command: one module per subcommand, dispatched here.

Each command module in this package defines `add_arguments(parser)` and `run(args) ->
int`; its one-line help is in `COMMAND_HELP` here, so that `vocoder --help` imports no
command module (nor torch). Errors derived from `VocoderError`, and the operating system's
refusals (`OSError`: a folder that cannot be created, a full disk), print as one line on
stderr naming the file and exit with code 2; `--verbose` shows the traceback as well.
Warnings print as `warning: ...`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys
import traceback
from collections.abc import Collection, Iterable
from typing import NoReturn

from vocoder import __version__
from vocoder.errors import InputError, Remedy, VocoderError, first_line

# command name -> module under vocoder.cli; modules are imported only when needed
COMMANDS: dict[str, str] = {
    "prepare": "prepare",
    "train": "train",
    "evaluate": "evaluate",
    "synthesize": "synthesize",
    "export": "export",
    "import": "import_",
    "info": "info",
    "models": "models",
    "demo": "demo",
}

COMMAND_HELP: dict[str, str] = {
    "prepare": "validate a dataset for a run's mel convention, write filelists",
    "train": "train a model from a YAML config (torchrun for several GPUs)",
    "evaluate": "test-set likelihood and copy-synthesis quality vs. Griffin-Lim",
    "synthesize": "turn mel files or audio (copy-synthesis) into waveforms",
    "export": "write a model's inference form (safetensors + JSON)",
    "import": "convert a published WaveFlow, NanoFlow or WaveGlow checkpoint",
    "info": "size, receptive field, FLOPs of a model, config or run folder",
    "models": "list the pretrained models and the published weights",
    "demo": "start the Gradio web demo",
}


class _CommandListFormatter(argparse.HelpFormatter):
    """Keeps each command's name and help on one line.

    argparse measures the command names without the extra indent it prints them with, so
    the longest name ("synthesize") would push its help onto the next line.
    """

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.choices:
            longest = max(map(len, action.choices)) + self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vocoder",
        description="Flow-based neural vocoders: WaveFlow, NanoFlow and WaveGlow.",
        epilog="Run 'vocoder COMMAND --help' for a command's options.",
        formatter_class=_CommandListFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vocoder {__version__}")
    # a subcommand's own default would overwrite a shared dest, hence a second one here
    parser.add_argument(
        "-v", "--verbose", dest="verbose_anywhere", action="store_true", help=argparse.SUPPRESS
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.command_parsers = {}  # a command's own parser words its usage errors
    for name in COMMANDS:
        p = sub.add_parser(name, help=COMMAND_HELP[name], description=COMMAND_HELP[name])
        p.add_argument(
            "-v", "--verbose", action="store_true", help="show tracebacks and debug logs"
        )
        if name == command:
            _module(name).add_arguments(p)
        parser.command_parsers[name] = p
    return parser


class _MessageFormatter(logging.Formatter):
    """The message alone; warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


# library keywords this CLI spells otherwise: every command replaces files with --force
FLAG_NAMES = {"overwrite": "force"}
# the command that takes a remedy's flag where the failing command has no such option: a
# reference config is given once, to `vocoder import` (not to synthesize, info, export...)
ELSEWHERE = {"config": "import"}


def flags(remedy: Remedy) -> str:
    """A remedy's options as this CLI's flags: `--mel-format meanvar --stats FILE`."""
    words = []
    for name, value in remedy.settings:
        words.append("--" + FLAG_NAMES.get(name, name).replace("_", "-"))
        if value is not True:
            words.append(str(value))
    return " ".join(words)


def cli_problem(
    problem: str, remedies: Iterable[Remedy | None], given: Collection[str] | None = None
) -> str:
    """`problem` and the remedies a user of the CLI can take: flags to pass, config keys to
    set (`; pass --resume to continue its run or --force to start over`). `given`: the
    options of the command that failed; a flag it lacks is worded with the command that
    takes it (`pass --config FILE to vocoder import`)."""
    phrases, all_flags = [], True
    for r in remedies:
        if r is None:
            continue
        if any("." in name for name, _ in r.settings):
            all_flags = False
            keys = ", ".join(f"{name}: {value}" for name, value in r.settings)
            phrases.append(f"set {keys} in the config {r.purpose}".rstrip())
            continue
        phrase = f"{flags(r)} {r.purpose}".rstrip()
        names = [FLAG_NAMES.get(name, name) for name, _ in r.settings]
        if given is not None and not all(name in given for name in names):
            owner = {ELSEWHERE.get(name) for name in names} - {None}
            phrase += f" to vocoder {owner.pop()}" if len(owner) == 1 else ""
        phrases.append(phrase)
    if not phrases:
        return problem
    if all_flags:
        return f"{problem}; pass {' or '.join(phrases)}"
    return f"{problem}; {' or '.join(p if p.startswith('set ') else 'pass ' + p for p in phrases)}"


def describe_error(error: Exception, given: Collection[str] | None = None) -> str:
    """One line for a `VocoderError` or an `OSError`: the file, then the problem. `given`:
    the failed command's options (see `cli_problem`)."""
    if isinstance(error, OSError) and error.strerror:
        problem = error.strerror[0].lower() + error.strerror[1:]
        where = error.filename2 if error.filename is None else error.filename
        return problem if where is None else f"{where}: {problem}"
    if isinstance(error, InputError):
        return f"{error.source}: {cli_problem(error.problem, error.remedies, given)}"
    return str(error) if isinstance(error, VocoderError) else first_line(error)


def _torchrun_rank() -> int:
    """This process's rank in a torchrun job (0 outside one, or where RANK is no number)."""
    if os.environ.get("WORLD_SIZE", "1") == "1":
        return 0
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _module(name: str):
    return importlib.import_module(f"vocoder.cli.{COMMANDS[name]}")


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # a file name that is not valid UTF-8 prints as escapes (under a UTF-8 locale,
        # stdout's strict errors made it crash the run after its audio was written)
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:  # Ctrl-C at any point, the imports of torch while the parser is built included
        return _run(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    """The `vocoder` command and `python -m vocoder`: `main`, then `end_process`; a bug's
    traceback is printed and ends it with status 1, as Python's own handler would."""
    try:
        status = main()
    except Exception:  # a torchrun process too ends through end_process, with its status
        traceback.print_exc()
        status = 1
    end_process(status)


def end_process(status: int) -> NoReturn:
    """Exit with `status`, as the `vocoder` command does after `main`.

    A process of a torchrun job (WORLD_SIZE set, not 1) ends without the interpreter's
    teardown: c10d's gloo threads may still be releasing the last collective's tensors,
    and a thread that asks for the GIL once teardown has begun aborts the whole process
    (SIGABRT, "terminate called without an active exception"), after a run that
    succeeded. Its output is flushed first; the trainer has closed its files by then.
    """
    if os.environ.get("WORLD_SIZE", "1") == "1":
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone, a stream closed: nothing to keep
            pass
    os._exit(status)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (not some other broken pipe)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor
        return False


def _run(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    command = command if command in COMMANDS else None
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list):
        # argparse ends a positional list at the first option: overrides given after one
        # (`--config c.yaml a=1 --out run b=2`) come back unparsed, and are overrides too
        if all("=" in a and not a.startswith("-") for a in extra):
            args.overrides += extra
            extra = []
    if extra:
        owner = parser.command_parsers.get(args.command, parser)
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    verbose = getattr(args, "verbose", False) or args.verbose_anywhere
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MessageFormatter())
    level = logging.DEBUG if verbose else logging.INFO
    if args.command == "train" and not verbose and _torchrun_rank() > 0:
        level = logging.ERROR  # torchrun's other processes: each notice once, from rank 0
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return int(_module(args.command).run(args) or 0)
    except (VocoderError, OSError) as e:
        if isinstance(e, BrokenPipeError) and _stdout_reader_gone():  # `vocoder info | head -1`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            return 141  # as a process ended by SIGPIPE
        if verbose:
            traceback.print_exc()
        print(f"error: {describe_error(e, vars(args))}", file=sys.stderr)
        return 2
