"""`vocoder export`: write a model's inference form as safetensors + JSON."""

from __future__ import annotations

import argparse

from vocoder.checkpoint import load_model
from vocoder.cli.outputs import add_stem_argument, output_folders, output_stem
from vocoder.inference.export import export_inference_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="training checkpoint (.pt), run folder, exported .safetensors or pretrained name",
    )
    add_stem_argument(parser, "MODEL")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="storage precision of the network weights (default fp32)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    stem = output_stem(args.model, args.out)
    with output_folders([stem.parent]):
        weights, meta = export_inference_model(
            args.model, stem, precision=args.precision, overwrite=args.force
        )
    model, info = load_model(weights)  # proves the export loads back
    count = model.parameter_count()
    print(
        f"wrote {weights} and {meta}: {info.model.family}, inference form, "
        f"{count / 1e6:.3f} M parameters, {args.precision} weights"
    )
    return 0
