"""`vocoder prepare`: validate a dataset, write filelists and a manifest of its mel convention."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from vocoder.cli import cli_problem, flags
from vocoder.cli.outputs import output_folders
from vocoder.data.audio_checks import SHOWN, RefusedFiles, advice
from vocoder.data.prepare import (
    INCOMPLETE,
    PrepareSummary,
    default_split,
    detect_layout,
    prepare_dataset,
)
from vocoder.errors import ConfigError, InputError
from vocoder.features import PRESETS, MelConfig
from vocoder.train.config import load_experiment_config

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  # LJ Speech with the NanoFlow split (first 10 % held out for test: 1,310 ids)
  vocoder prepare data/LJSpeech-1.1 --out data/ljspeech --split nanoflow

  # LJ Speech with the Tacotron 2 / WaveGlow split lists
  vocoder prepare data/LJSpeech-1.1 --out data/ljs-t2 --split tacotron2 \\
      --splits-dir data/ljspeech-splits

  # a custom voice for a 24 kHz / hop 300 run: the run's config gives the mel convention
  # (sample rate, hop, mels...) and the segment length; files at other rates are
  # resampled, multi-channel ones mixed down
  vocoder prepare recordings/ --out data/myvoice \\
      --config recipes/custom_voice/conf/waveflow-24k-hop300.yaml --resample --mixdown --skip-bad

The output folder holds train.txt, valid.txt, test.txt, wavs/ (only audio that was
resampled or mixed down) and manifest.json, which records the mel convention: training
refuses the folder when its config's features differ. No mels are written (training
computes them from the audio). Without --config the convention is --mel-preset at
--sample-rate. Nothing is overwritten without --force. Every file is checked before any is
refused: without --skip-bad the files that fail are named, a line each (the first 20),
with a count by kind and the flags that fix each kind, and the output folder is left as it
was.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        type=Path,
        help="dataset folder: LJ Speech (metadata.csv, wavs/) or any folder of audio files",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="OUT_DIR", help="output folder (see below)"
    )
    parser.add_argument(
        "--layout",
        choices=["ljspeech", "folder"],
        help="dataset layout (default: ljspeech when DATA_DIR has metadata.csv, else folder)",
    )
    parser.add_argument(
        "--split",
        choices=["nanoflow", "espnet", "tacotron2", "hifigan", "listed", "random"],
        help="train/valid/test split (default: listed when DATA_DIR has train.txt and "
        "test.txt; else nanoflow for LJ Speech, random for a folder)",
    )
    parser.add_argument(
        "--splits-dir",
        type=Path,
        metavar="DIR",
        help="folder with the tacotron2_*.txt / hifigan_*.txt id lists",
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=None,
        metavar="F",
        help="share of the files held out for validation by a random split (default 0.05)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        metavar="F",
        help="share of the files held out for testing by a random split (default 0.05)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of random splits (default 0)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="CONF.yaml",
        help="the experiment config of the run: its features are the mel convention, its "
        "data.segment_length the shortest file kept (instead of --mel-preset, --sample-rate)",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        metavar="N",
        help="target sample rate (default: the mel preset's, 22050)",
    )
    parser.add_argument(
        "--resample", action="store_true", help="resample files at another rate (else reject)"
    )
    parser.add_argument(
        "--mixdown", action="store_true", help="average multi-channel files (else reject)"
    )
    parser.add_argument(
        "--segment-length",
        type=int,
        metavar="N",
        help="training segment in samples; shorter files are rejected (default: the "
        "config's data.segment_length, else 16000)",
    )
    parser.add_argument(
        "--mel-preset",
        choices=sorted(PRESETS),
        help="mel convention (default tacotron2)",
    )
    parser.add_argument("--skip-bad", action="store_true", help="leave out bad files and list them")
    parser.add_argument("--force", action="store_true", help="overwrite an earlier output")


def convention_from_args(args: argparse.Namespace) -> tuple[MelConfig, int]:
    """(mel convention, segment length): the --config's, else from the flags."""
    if args.config is None:
        segment_length = 16000 if args.segment_length is None else args.segment_length
        return mel_config_from_args(args), segment_length
    flags = {"--sample-rate": args.sample_rate, "--mel-preset": args.mel_preset}
    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise ConfigError(f"--config states the mel convention; drop {' and '.join(given)}")
    # data.prepared is where this run will find the folder (the config may name another)
    prepared = f"data.prepared={json.dumps(str(args.out))}"
    config = load_experiment_config(args.config, [prepared])
    segment_length = config.data.segment_length
    return config.features, segment_length if args.segment_length is None else args.segment_length


def mel_config_from_args(args: argparse.Namespace) -> MelConfig:
    """The preset, at --sample-rate when given (fmax lowered to Nyquist where needed)."""
    preset = args.mel_preset or "tacotron2"
    if args.sample_rate is None:
        return MelConfig.preset(preset)
    if args.sample_rate <= 0:
        raise ConfigError(f"--sample-rate must be positive, got {args.sample_rate}")
    changes: dict = {"sample_rate": args.sample_rate}
    fmax = PRESETS[preset].fmax
    if fmax is not None and fmax > args.sample_rate / 2:
        changes["fmax"] = args.sample_rate / 2
        log.info("fmax lowered to %g Hz (Nyquist of %d Hz)", changes["fmax"], args.sample_rate)
    return MelConfig.preset(preset, **changes)


def check_options(args: argparse.Namespace) -> None:
    """Refuse values the library would word as its own, and flags the split would ignore."""
    if args.data_dir.is_file():
        raise InputError(args.data_dir, "is a file; DATA_DIR is the dataset's folder")
    if args.segment_length is not None and args.segment_length <= 0:
        raise ConfigError(f"--segment-length must be positive, got {args.segment_length}")
    fractions = {"--valid-fraction": args.valid_fraction, "--test-fraction": args.test_fraction}
    for flag, value in fractions.items():
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{flag} must be in [0, 1), got {value}")
    if not args.data_dir.is_dir():
        return  # the library names the missing folder
    layout = args.layout or detect_layout(args.data_dir)
    split = args.split or default_split(args.data_dir, layout)
    if args.splits_dir is not None and split not in ("tacotron2", "hifigan"):
        raise ConfigError(f"--splits-dir applies to the tacotron2 and hifigan splits, not {split}")
    given = [flag for flag, value in fractions.items() if value is not None]
    if given and split != "random":
        raise ConfigError(f"{' and '.join(given)} applies to the random split, not {split}")


def run(args: argparse.Namespace) -> int:
    check_options(args)
    mel_config, segment_length = convention_from_args(args)
    bars: list[tqdm] = []  # made on the first file, so early errors print one clean line

    interactive = sys.stderr.isatty()

    def progress(done: int, total: int, path: Path) -> None:
        if not interactive:
            # Logs and pipes get a line per tenth instead of carriage-return redraws.
            if done == total or done * 10 // total != (done - 1) * 10 // total:
                log.info("prepare: %d/%d files", done, total)
            return
        if not bars:
            bars.append(tqdm(total=total, unit="file", desc="prepare", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    new_folder = not args.out.exists()
    try:
        with output_folders([args.out]):
            summary = _prepare(args, mel_config, segment_length, progress, new_folder)
    except BaseException as e:
        if bars:
            bars[0].leave = False  # erase the bar: the error lines stand alone
            bars[0].close()
        if not isinstance(e, RefusedFiles):
            raise
        for line in refusal_lines(e):
            print(f"error: {line}", file=sys.stderr)
        return 2
    if bars:
        bars[0].close()
    print(format_summary(summary))
    return 0


def _prepare(
    args: argparse.Namespace,
    mel_config: MelConfig,
    segment_length: int,
    progress,
    new_folder: bool,
) -> PrepareSummary:
    """`prepare_dataset`; a folder made for it that fails at its first write holds only the
    unfinished-run marker, which goes (and the empty folder with it)."""
    try:
        return prepare_dataset(
            args.data_dir,
            args.out,
            layout=args.layout,
            split=args.split,
            splits_dir=args.splits_dir,
            valid_fraction=0.05 if args.valid_fraction is None else args.valid_fraction,
            test_fraction=0.05 if args.test_fraction is None else args.test_fraction,
            seed=args.seed,
            mel_config=mel_config,
            segment_length=segment_length,
            resample=args.resample,
            mixdown=args.mixdown,
            skip_bad=args.skip_bad,
            force=args.force,
            progress=progress,
        )
    except BaseException:
        if new_folder and args.out.is_dir():
            if [p.name for p in args.out.iterdir()] == [INCOMPLETE]:
                (args.out / INCOMPLETE).unlink()
        raise


def refusal_lines(error: RefusedFiles) -> list[str]:
    """The refused files, a line each (the first `SHOWN`), then their count by kind with the
    flags that fix each kind: `DIR: 2 file(s) refused (...): pass --resample to convert the
    sample rates and --skip-bad to leave out the rest`."""
    lines = [f"{r.path}: {cli_problem(r.reason, r.remedies)}" for r in error.refused[:SHOWN]]
    if len(error.refused) > SHOWN:
        lines.append(f"and {len(error.refused) - SHOWN} more refused file(s)")
    phrases = [f"{flags(r)} {r.purpose}" for r in error.remedies]
    if error.left_out:  # --skip-bad left out every file: the fixes alone are the advice
        fixes = f": pass {' and '.join(phrases)}" if phrases else ""
        lines.append(f"{error.source}: {error.problem}{fixes}")
    else:
        lines.append(f"{error.source}: {error.problem}: pass {advice(phrases, error.unfixable)}")
    return lines


def format_summary(summary: PrepareSummary) -> str:
    """The table printed at the end: files and hours per part, then rejected files."""
    lines = [
        f"prepared {summary.out_dir} ({summary.layout} layout, {summary.split} split)",
        f"  {'part':<6} {'files':>7} {'hours':>8}",
    ]
    for part, count in summary.counts.items():
        lines.append(f"  {part:<6} {count:>7} {summary.hours.get(part, 0.0):>8.3f}")
    lines.append(f"  {'total':<6} {summary.accepted:>7} {summary.total_hours:>8.3f}")
    if summary.rewritten:
        lines.append(f"  {summary.rewritten} file(s) resampled or mixed down into wavs/")
    if summary.rejected:
        lines.append(f"rejected {len(summary.rejected)} file(s):")
        lines.extend(f"  {r.path}: {cli_problem(r.reason, r.remedies)}" for r in summary.rejected)
    else:
        lines.append("rejected: none")
    return "\n".join(lines)
