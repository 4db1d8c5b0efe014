"""`vocoder export`: write a model's inference form as safetensors + JSON."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vocoder.checkpoint import load_model
from vocoder.cli.outputs import output_folders
from vocoder.inference.engine import export_inference_model

HELP = "write a model's inference form (safetensors + JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="training checkpoint (.pt), run folder, exported .safetensors or pretrained name",
    )
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="STEM",
        help="output path without extension: writes STEM.safetensors and STEM.json (a "
        "folder, or a path ending in /, gets MODEL's name: DIR/NAME.safetensors)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="storage precision of the network weights (default fp32)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def output_stem(model: str, out: str) -> Path:
    """`out`, or inside the folder `out` (or `out` ending in a slash) the model's name."""
    if not (Path(out).is_dir() or out.endswith(("/", os.sep))):
        return Path(out)
    source = Path(model)
    name = source.stem if source.is_file() else source.name if source.is_dir() else model
    return Path(out) / name


def run(args: argparse.Namespace) -> int:
    stem = output_stem(args.model, args.out)
    with output_folders([stem.parent]):
        weights, meta = export_inference_model(
            args.model, stem, precision=args.precision, overwrite=args.force
        )
    model, info = load_model(weights)  # proves the export loads back
    count = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {weights} and {meta}: {info.model.family}, inference form, "
        f"{count / 1e6:.3f} M parameters, {args.precision} weights"
    )
    return 0
