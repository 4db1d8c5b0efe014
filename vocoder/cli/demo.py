"""`vocoder demo`: serve the Gradio web demo on this machine.

The demo lives in the repository's `app/` folder; an install puts it at `vocoder.app`
(setup.cfg), so that nothing named `app` lands beside the user's own packages. A clone run
in place (no install) imports the folder as `app`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import math
import os
import socket
from pathlib import Path
from types import ModuleType

import vocoder
from vocoder.devices import resolve_device
from vocoder.errors import VocoderError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: everyone)",
    )
    parser.add_argument(
        "--port", type=int, default=7860, metavar="N", help="port, 1 to 65535 (default 7860)"
    )
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
    for name, value in (
        ("--max-upload-mb", args.max_upload_mb),
        ("--max-seconds", args.max_seconds),
    ):
        if not (math.isfinite(value) and value > 0):  # NaN passes `value <= 0`
            raise VocoderError(f"{name} must be positive and finite, got {value:g}")
    if args.concurrency < 1:
        raise VocoderError(f"--concurrency must be at least 1, got {args.concurrency}")
    if not 1 <= args.port <= 65535:
        raise VocoderError(f"--port must be from 1 to 65535, got {args.port}")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise VocoderError("the demo needs Gradio: pip install 'vocoder[demo]'") from None
    app = demo_package()
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
    demo.warm_up()
    # Gradio checks its own server over HTTP at startup; those requests are not news to people.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # IPv6 in brackets: Gradio builds its start-up self-check URL from the host as given
    where = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
    print(f"Serving the demo on http://{where}:{args.port} (Ctrl+C stops it)")
    app.launch(
        settings,
        host=where,
        port=args.port,
        concurrency=args.concurrency,
        quiet=True,
        demo=demo,
    )
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail before loading anything where the host or port cannot be used: Gradio's own error
    says to set GRADIO_SERVER_PORT, which this command's --port overrides."""
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
    try:
        (family, *_, sockaddr), *_ = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise VocoderError(
            f"--host {host}: not an address to listen on ({reason}); pass --host with an "
            "address or name of this machine (127.0.0.1, 0.0.0.0)"
        ) from None
    try:
        with socket.create_server(sockaddr, family=family):
            pass
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else e  # not create_server's longer text
        if e.errno in (errno.EADDRINUSE, errno.EACCES):  # taken, or below 1024 without root
            raise VocoderError(
                f"cannot listen on {host}:{port} ({reason}); pass --port with a free port"
            ) from None
        raise VocoderError(
            f"--host {host}: cannot listen there ({reason}); pass --host with an address of "
            "this machine (127.0.0.1, 0.0.0.0)"
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
