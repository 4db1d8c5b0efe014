"""`vocoder import`: convert a published checkpoint (NanoFlow reference, NVIDIA WaveGlow)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vocoder.checkpoint import load_model
from vocoder.cli.outputs import add_stem_argument, output_folders, output_stem
from vocoder.importers import check_height, import_checkpoint, write_imported


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="the published checkpoint: the NanoFlow reference code's .pt (WaveFlow, "
        "NanoFlow), NVIDIA's WaveGlow training checkpoint or its torch.hub/NGC file",
    )
    add_stem_argument(parser, "SRC")
    parser.add_argument(
        "--config",
        metavar="REF_CONFIG.json",
        help="the reference code's JSON config of the checkpoint (NanoFlow: the "
        "configs/*.json it was trained with; needed for naive NanoFlow; WaveGlow: "
        "config.json); otherwise the architecture is read off the tensor shapes",
    )
    parser.add_argument(
        "--n-height",
        type=int,
        default=16,
        metavar="H",
        help="NanoFlow reference checkpoints without --config: the squeeze height h, a "
        "power of two up to 256 (no tensor records it; default 16, as every published model)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    check_height(args.n_height, "--n-height")
    stem = output_stem(args.source, args.out)
    imported = import_checkpoint(args.source, args.config, args.n_height)
    with output_folders([stem.parent]):
        inputs = (args.source, args.config)
        weights, meta = write_imported(imported, stem, overwrite=args.force, inputs=inputs)
    model, info = load_model(weights)  # proves the files load back
    count = model.parameter_count(inference_form=True)
    print(
        f"wrote {weights} and {meta}: {info.model.family} from {Path(args.source).name} "
        f"({imported.metadata['imported_from']}), training form, {count / 1e6:.3f} M "
        "parameters in inference form"
    )
    return 0
