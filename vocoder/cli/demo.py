"""`vocoder demo`: serve the Gradio web demo on this machine.

The demo lives in the repository's `app/` folder; an install puts it at `vocoder.app`
(setup.cfg), so that nothing named `app` lands beside the user's own packages. A clone run
in place (no install) imports the folder as `app`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
from pathlib import Path
from types import ModuleType

import vocoder
from vocoder.devices import resolve_device
from vocoder.errors import VocoderError

HELP = "start the Gradio web demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: everyone)",
    )
    parser.add_argument("--port", type=int, default=7860, metavar="N", help="port (default 7860)")
    parser.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        nargs="+",
        action="extend",
        help=(
            "models the page offers: pretrained names (see 'vocoder models') or exported "
            ".safetensors files; default: every pretrained model in the registry"
        ),
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when there is one), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        metavar="MB",
        help="largest upload accepted, in MB (default 20)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="longest input accepted, in seconds (default 60)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="syntheses run at once; further requests wait in a queue (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise VocoderError("the demo needs Gradio: pip install 'vocoder[demo]'") from None
    app = demo_package()

    for name, value in (
        ("--max-upload-mb", args.max_upload_mb),
        ("--max-seconds", args.max_seconds),
    ):
        if value <= 0:
            raise VocoderError(f"{name} must be positive, got {value:g}")
    if args.concurrency < 1:
        raise VocoderError(f"--concurrency must be at least 1, got {args.concurrency}")
    resolve_device(args.device)  # a bad --device fails now, not on every request
    _check_port_free(args.host, args.port)
    settings = app.DemoSettings(
        models=tuple(args.model or ()),
        device=args.device,
        max_upload_mb=args.max_upload_mb,
        max_seconds=args.max_seconds,
    )
    demo = app.VocoderDemo(settings)
    if not demo.model_choices():
        raise VocoderError(
            "no models to serve: the registry lists none on this machine; pass --model with "
            "an exported .safetensors file"
        )
    # The models named on the command line load now: a missing or unreadable one stops
    # the demo here with one line, instead of failing each visitor's request.
    for model in settings.models:
        demo.cache.get(model)
    # Gradio checks its own server over HTTP at startup; those requests are not news to people.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    print(f"Serving the demo on http://{args.host}:{args.port} (Ctrl+C stops it)")
    app.launch(
        settings,
        host=args.host,
        port=args.port,
        concurrency=args.concurrency,
        quiet=True,
        demo=demo,
    )
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail before loading anything where the port is taken: Gradio's own error says to set
    GRADIO_SERVER_PORT, which this command's --port overrides."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise VocoderError(
            f"cannot listen on {host}:{port} ({os.strerror(e.errno) if e.errno else e}); "
            "pass --port with a free port"
        ) from None


def demo_package() -> ModuleType:
    """The demo's package: `vocoder.app` when installed, else `app/` beside `vocoder/`."""
    try:
        return importlib.import_module("vocoder.app")
    except ModuleNotFoundError as e:
        if e.name != "vocoder.app":
            raise
    folder = Path(vocoder.__file__).resolve().parents[1] / "app"
    package = importlib.import_module("app") if (folder / "__init__.py").is_file() else None
    if package is None or Path(package.__file__).resolve().parent != folder:
        raise VocoderError(f"the demo is not installed: no vocoder.app, and no {folder}")
    return package
