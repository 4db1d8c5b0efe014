"""`vocoder evaluate`: test-set likelihood and copy-synthesis quality against Griffin-Lim."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from tqdm import tqdm

from vocoder.checkpoint import lineage, list_checkpoints, load_averaged_model, load_model
from vocoder.cli.allocator import keep_freed_memory
from vocoder.cli.outputs import output_folders
from vocoder.config import to_dict
from vocoder.data.filelist import read_filelist
from vocoder.devices import resolve_device
from vocoder.errors import ConfigError, InputError
from vocoder.evaluate import METRICS, EvalReport, evaluate, write_report
from vocoder.files import refuse_existing
from vocoder.inference.engine import Synthesizer
from vocoder.inference.sizing import log_prob_batch_size
from vocoder.model_source import resolve_model_source
from vocoder.sigma import DEFAULT_SIGMA, check_sigma

log = logging.getLogger(__name__)

EPILOG = f"""\
examples:
  vocoder evaluate --checkpoint exp/waveflow-r64 --filelist data/ljspeech/test.txt \\
      --out exp/waveflow-r64/eval/report.json
  vocoder evaluate --checkpoint exp/waveflow-r64 --average 20 --filelist test.txt
  vocoder evaluate --checkpoint model.safetensors --filelist test.txt --no-synthesis

LL: mean log-density of each whole test utterance in nats per sample, averaged over clips
(--batch-size utterances per pass, zero-padded with the padding masked: the same figures).
Copy-synthesis (sigma {DEFAULT_SIGMA} by default) and Griffin-Lim (60 iterations, the floor)
from the same mels are scored against the recordings: log-mel L1, MCD (dB; cepstra 1..24 of
the mel filterbank in SPTK's scale, no DTW), PESQ wideband (at 16 kHz), STOI, real-time
factor (synthesis time / duration).
The report is JSON, with a CSV of the same stem (one row per file and system).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--checkpoint",
        "--model",
        required=True,
        type=Path,
        metavar="PATH",
        help="a .pt checkpoint, a run folder (its latest), an exported .safetensors or a "
        "pretrained model's name (see 'vocoder models'); --model is the same option, named "
        "as in synthesize and demo",
    )
    parser.add_argument(
        "--filelist",
        required=True,
        type=Path,
        metavar="FILE",
        help="test filelist: one audio file per line",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="REPORT.json",
        help="write the report here (JSON, and a CSV beside it; default: printed only)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=DEFAULT_SIGMA,
        help=f"prior temperature (default {DEFAULT_SIGMA})",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when there is one), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--no-synthesis", action="store_true", help="likelihood only (fast): no audio metrics"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="utterances scored for LL in one padded pass (default 8 on a GPU, 1 on a CPU, "
        "where batching does not pay; exact: padding is masked)",
    )
    parser.add_argument(
        "--max-files", type=int, metavar="N", help="score the first N files only (default: all)"
    )
    parser.add_argument(
        "--average",
        type=int,
        default=1,
        metavar="N",
        help="average the weights of the last N checkpoints up to --checkpoint (default 1: off)",
    )
    parser.add_argument(
        "--weights",
        choices=["auto", "ema", "model"],
        default="auto",
        help="checkpoint weights: auto (default) takes the EMA ones when present (the raw ones "
        "with --average); ema or model insists on one",
    )
    parser.add_argument(
        "--mel-dir",
        type=Path,
        metavar="DIR",
        help="condition on these mels (<stem>.npy, e.g. a TTS model's) instead of the audio's",
    )
    parser.add_argument(
        "--audio-dir",
        type=Path,
        metavar="DIR",
        help="also write the synthesized audio here (<stem>.wav, <stem>.griffin_lim.wav; "
        "existing files only with --force)",
    )
    parser.add_argument(
        "--engine",
        choices=["fast", "plain"],
        default="fast",
        help="synthesis engine scored: fast (the Synthesizer users get, default) or plain "
        "(the model's reference inverse)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="network precision of the fast engine (default fp32, as the published figures; "
        "synthesize's default on a CPU with bf16 units is bf16)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default 0)")
    parser.add_argument(
        "--force", action="store_true", help="overwrite an earlier report and --audio-dir files"
    )


def _refuse_inputs_as_reports(args: argparse.Namespace) -> None:
    """The report and its CSV may not replace the filelist or the model, even with --force."""
    inputs = {args.filelist: "--filelist", args.checkpoint: "--checkpoint"}
    if args.checkpoint.suffix.lower() == ".safetensors":
        inputs[args.checkpoint.with_suffix(".json")] = "--checkpoint's JSON"
    for report in (args.out, args.out.with_suffix(".csv")):
        for path, option in inputs.items():
            if report.resolve() == path.resolve():
                raise InputError(report, f"is the {option}; choose another --out")


def run(args: argparse.Namespace) -> int:
    check_sigma(args.sigma, "--sigma")
    if args.max_files is not None and args.max_files < 1:
        raise ConfigError(f"--max-files must be positive, got {args.max_files}")
    if args.average < 1:
        raise ConfigError(f"--average must be positive, got {args.average}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.out is not None and args.out.is_dir():
        raise InputError(args.out, "is a folder; --out takes the report's file (REPORT.json)")
    if args.out is not None and args.out.suffix.lower() != ".json":
        # the CSV goes beside it with the same stem: `report.csv` would be overwritten
        raise InputError(args.out, "--out takes the report's .json file (its CSV goes beside it)")
    if args.audio_dir is not None and args.no_synthesis:
        raise ConfigError("--audio-dir writes synthesized audio: drop it or --no-synthesis")
    if args.precision != "fp32" and (args.engine == "plain" or args.no_synthesis):
        raise ConfigError(f"--precision {args.precision} applies to the fast engine's synthesis")
    if args.out is not None:
        _refuse_inputs_as_reports(args)
        if not args.force:
            refuse_existing([args.out, args.out.with_suffix(".csv")])
    if args.mel_dir is not None and not args.mel_dir.is_dir():
        is_file = args.mel_dir.is_file()
        problem = "is a file; --mel-dir takes a folder" if is_file else "no such folder (--mel-dir)"
        raise InputError(args.mel_dir, problem)
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        raise ConfigError(f"--device {args.device}: {e}") from None
    keep_freed_memory()
    files = read_filelist(args.filelist)
    if not files:
        raise InputError(args.filelist, "the filelist names no files")
    if args.max_files is not None:
        files = files[: args.max_files]
    folders = [p for p in (args.out.parent if args.out else None, args.audio_dir) if p]
    with output_folders(folders):  # an unwritable report fails now, not after the work
        return _evaluate(args, device, files)


def _evaluate(args: argparse.Namespace, device, files: list[Path]) -> int:
    model, info = _load(args, device)
    # what was asked for (a name, a published checkpoint) and the file that holds it
    given = str(args.checkpoint)
    log.info(
        "evaluating %s (%s, step %s, %s weights) on %d file(s) of %s",
        given if given == str(info.source) else f"{given} ({info.source})",
        info.model.family,
        info.step,
        info.weights,
        len(files),
        args.filelist,
    )
    # a checkpoint records the stems it trained on (and those its init_from weights had
    # seen), an export all of them
    seen = lineage(info.metadata).get("train_ids", ())
    trained_on = sorted({p.stem for p in files} & set(seen))
    if trained_on:
        more = f" and {len(trained_on) - 1} more" if len(trained_on) > 1 else ""
        log.warning(
            "%d of %d file(s) of %s were trained on (%s%s): these are not test figures",
            len(trained_on),
            len(files),
            args.filelist,
            trained_on[0],
            more,
        )
    synthesize = None
    if args.engine == "fast" and not args.no_synthesis:
        engine = Synthesizer.from_model(
            model, info.features, info.source.stem, device=device, precision=args.precision
        )

        def synthesize(mel, sigma, seed):
            return engine.synthesize(mel, sigma=sigma, seed=seed)

    bar = tqdm(total=len(files), unit="file", disable=not sys.stderr.isatty(), leave=False)

    def on_file(done: int, total: int, name: str) -> None:
        bar.update(1)
        if bar.disable:
            log.info("evaluate: %d/%d %s", done, total, name)

    try:
        report = evaluate(
            model,
            info.features,
            files,
            sigma=args.sigma,
            synthesis=not args.no_synthesis,
            device=device,
            seed=args.seed,
            mel_dir=args.mel_dir,
            audio_dir=args.audio_dir,
            info={
                "checkpoint_given": given,
                "checkpoint": str(info.source),
                "step": info.step,
                "weights": info.weights,
                "averaged": info.metadata.get("averaged"),
                "filelist": str(args.filelist),
                "trained_on": len(trained_on),
                "engine": args.engine,
                "precision": args.precision,
                "model": to_dict(info.model),
                "features": to_dict(info.features),
            },
            on_file=on_file,
            synthesize=synthesize,
            batch_size=args.batch_size or log_prob_batch_size(device),
            overwrite=args.force,
        )
    finally:
        bar.close()
    print(format_table(report))
    if args.out is not None:
        written = write_report(report, args.out, overwrite=args.force)
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _load(args: argparse.Namespace, device):
    if args.average == 1:
        return load_model(
            resolve_model_source(args.checkpoint), device=device, weights=args.weights
        )
    checkpoints = list_checkpoints(
        args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    )
    if not args.checkpoint.is_dir():
        if args.checkpoint not in checkpoints:
            raise InputError(args.checkpoint, "--average needs a checkpoint of a run folder")
        checkpoints = checkpoints[: checkpoints.index(args.checkpoint) + 1]
    if len(checkpoints) < args.average:
        raise InputError(
            args.checkpoint, f"--average {args.average}: only {len(checkpoints)} checkpoint(s)"
        )
    weights = "model" if args.weights == "auto" else args.weights
    return load_averaged_model(checkpoints[-args.average :], device=device, weights=weights)


def format_table(report: EvalReport) -> str:
    """The summary as a small table: LL, then one row per system."""
    summary = report.summary()
    heads = {
        "log_mel_l1": "mel L1",
        "mcd_db": "MCD dB",
        "pesq_wb": "PESQ-wb",
        "stoi": "STOI",
        "rtf": "RTF",
    }
    trained_on = report.info.get("trained_on") or 0
    which = f"LL ({trained_on} of them trained on)" if trained_on else "test LL"
    lines = [f"{which} {_fmt(summary['ll'], 4)} nats/sample over {summary['files']} file(s)"]
    systems = [s for s in ("model", "griffin_lim") if s in summary]
    if systems:
        lines.append(f"{'system':<12}" + "".join(f"{heads[m]:>10}" for m in METRICS))
        for system in systems:
            row = summary[system]
            cells = "".join(f"{_fmt(row[m], 3):>10}" for m in METRICS)
            lines.append(f"{system.replace('_', '-'):<12}{cells}")
        for system in systems:  # a mean of fewer files than were scored says so
            for metric, scored in summary[system]["scored"].items():
                if scored < summary["files"]:
                    lines.append(
                        f"{system.replace('_', '-')} {heads[metric]}: the mean of {scored} of "
                        f"{summary['files']} file(s); undefined for the others (see the CSV)"
                    )
    return "\n".join(lines)


def _fmt(value: float, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
