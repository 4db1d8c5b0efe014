"""`vocoder synthesize`: mel files, or audio (copy-synthesis), to waveforms.

Every input is read and checked, and every output folder made and checked, before
anything is synthesized, so a bad file or an unwritable folder stops the run with one line
naming it and nothing written (folders made for the run are removed again). Outputs go to
DIR/<stem>.wav (files found in a folder keep their path below that folder, files named by
a relative path in a `.txt` file list keep that path), written atomically and tagged as
vocoder's synthesis, never over an existing file unless --force, and never over a file
that is not such audio (a recording). Each output's line, and the totals, report samples at or
over full scale (clipped in 16-bit PCM); --peak-normalize scales outputs to a set peak.
An input that is resampled or mixed down is said so in one line; a SIGTERM stops the run
like Ctrl-C, leaving no empty folder made for it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vocoder.audio import (
    AUDIO_EXTENSIONS,
    PCM16_MAX,
    audio_info,
    is_synthesized,
    load_audio,
    pcm16_clipped,
    save_audio,
)
from vocoder.cli import cli_problem, describe_error
from vocoder.cli.allocator import keep_freed_memory
from vocoder.cli.outputs import output_folders
from vocoder.devices import resolve_device
from vocoder.errors import ConfigError, InputError, VocoderError, first_line
from vocoder.files import TEXT_ENCODING, refuse_existing, remove_orphaned_temporaries
from vocoder.inference.engine import Synthesizer, default_batch_size
from vocoder.melio import (
    MEL_FORMATS,
    MEL_SUFFIXES,
    DbNormalization,
    MeanVarStats,
    check_mel_range,
    load_mel,
    load_stats,
)
from vocoder.precision import default_precision
from vocoder.sigma import DEFAULT_SIGMA, check_sigma

log = logging.getLogger(__name__)

LIST_EXTENSION = ".txt"  # a file list: one input path per line
QUIETEST_PEAK_DBFS = -90.0  # one 16-bit LSB is -90.3 dBFS: a quieter peak writes silence


@dataclass
class Job:
    """One input file and where its audio goes. Its mel is read twice: once to check it
    before anything is synthesized, once when its batch comes (thousands of mels held from
    the first read to the last would fill the memory)."""

    source: Path
    output: Path
    is_audio: bool
    index: int = 0  # its place among all inputs: its noise seed is --seed + index
    frames: int = 0  # of its mel, once checked
    samples: int = 0  # output length (copy-synthesis: the input's, as far as its mel covers)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="mel files (.npy, .pt), audio files (" + ", ".join(AUDIO_EXTENSIONS) + ": "
        "copy-synthesis), folders of them (searched recursively) or .txt file lists (one "
        "path per line, relative to the list's folder; # comments)",
    )
    parser.add_argument(
        "--out", "-o", required=True, type=_out_folder, metavar="DIR", help="output folder"
    )
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        metavar="NAME_OR_PATH",
        help="pretrained model name, exported .safetensors, training checkpoint or run folder "
        "(default: the registry's default model)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out the inputs whose output exists: run the same command again with it "
        "(and the same --seed) to finish an interrupted run as it would have ended",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads (default: one a core); give several processes sharing a machine "
        "a share each",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when there is one), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        default=None,
        help="network precision (fp16 on GPUs only; default bf16 on a CPU with bf16 units, "
        "else fp32; fp32 is full precision)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="utterances synthesized together (default 8 on a GPU, 16 on a CPU)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=DEFAULT_SIGMA,
        help=f"noise scale of z ~ N(0, sigma^2) (default {DEFAULT_SIGMA}; 0.6 to 1.0 is usual)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="noise seed (file i uses SEED + i; default random)"
    )
    parser.add_argument(
        "--denoise",
        type=float,
        default=0.0,
        metavar="STRENGTH",
        help="WaveGlow-style denoiser strength (0 = off; 0.01 to 0.1 is usual)",
    )
    parser.add_argument(
        "--mel-format",
        choices=MEL_FORMATS,
        default="ln",
        help="convention of the mel files (default ln, natural log)",
    )
    parser.add_argument(
        "--stats",
        type=Path,
        default=None,
        metavar="FILE",
        help="mean and scale of each mel bin for --mel-format meanvar (.npy [2, n_mels], .npz "
        "with mean and scale, or ESPnet's feats_stats.npz)",
    )
    parser.add_argument(
        "--db-normalization",
        metavar="K=V,...",
        help="parameters of --mel-format db-normalized: symmetric (true or false), "
        "max_abs_value (default 1, or 4 when symmetric), ref_level_db (20), min_level_db "
        "(-100); e.g. symmetric=true",
    )
    parser.add_argument(
        "--peak-normalize",
        type=float,
        default=None,
        metavar="DB",
        help="scale each output so that its peak is DB dBFS (e.g. -1; -90 to 0), so that "
        "nothing clips; default: levels as synthesized, with clipped samples reported",
    )
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        metavar="S",
        help="synthesize long inputs in chunks of this length (default: when memory needs it)",
    )


def _out_folder(text: str) -> Path:
    if not text.strip():  # Path("") is the current folder: an unset $OUT would write there
        raise argparse.ArgumentTypeError("an empty path (an unset variable?)")
    return Path(text)


def collect_inputs(
    inputs: list[str], out_dir: Path, missing: list[InputError] | None = None
) -> list[Job]:
    """The files behind the inputs (folders searched recursively, `.txt` file lists read
    line by line) and their outputs. An input that is not there is raised, or with
    `missing` given, noted there (to be said with the inputs that cannot be read)."""
    jobs: list[Job] = []
    noted: list[InputError] = []  # every input not found is said, not the first
    for name in inputs:
        path = Path(name)
        if path.is_file() and path.suffix.lower() == LIST_EXTENSION:
            jobs.extend(_read_file_list(path, out_dir, noted))
        else:
            place = Path() if path.is_dir() else Path(path.stem)
            jobs.extend(_found(path, out_dir / place, str(path), out_dir, noted))
    if missing is None or not jobs:  # with no input found there is nothing more to read
        report_all(noted, "inputs cannot be found or used")
    else:
        missing.extend(noted)
    sources = {job.source.resolve() for job in jobs}
    seen: dict[Path, Path] = {}  # output -> source
    done: dict[Path, Job] = {}  # source -> its job
    unique: list[Job] = []
    clashes: list[tuple[Job, Path]] = []
    for job in jobs:
        output, source = job.output.resolve(), job.source.resolve()
        if output in sources:
            raise InputError(job.output, "is an input too; choose another --out folder")
        if source in done:  # the same file named twice (a list and a folder): once
            if done[source].output.resolve() != output:
                log.info(
                    "%s: named twice; synthesized once, to %s", job.source, done[source].output
                )
            continue
        if output in seen:
            clashes.append((job, seen[output]))
            continue
        seen[output], done[source] = job.source, job
        unique.append(job)
    if clashes:
        (job, other), more = clashes[0], len(clashes) - 1
        also = f" (and {more} more input(s) share an output)" if more else ""
        raise InputError(job.source, f"its output {job.output} is also that of {other}{also}")
    for index, job in enumerate(unique):
        job.index = index
    return unique


def report_all(errors: list[VocoderError | OSError], problem: str) -> None:
    """Raise the one error of `errors`; of several, say each (one line each) and raise one
    that counts them; nothing when there is none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        for error in errors:
            log.error("%s", describe_error(error))
        raise VocoderError(f"nothing synthesized: {len(errors)} {problem} (each said above)")


def _found(
    path: Path, place: Path, origin: str, out_dir: Path, missing: list[InputError]
) -> list[Job]:
    """`_jobs_for`, with an input that is not there noted in `missing` instead of raised."""
    try:
        return _jobs_for(path, place, origin, out_dir)
    except InputError as e:
        if path.exists() or path.is_symlink():
            raise
        missing.append(e)
        return []


def _jobs_for(path: Path, place: Path, origin: str, out_dir: Path) -> list[Job]:
    """The jobs of one file (its audio goes to `place` + ".wav") or folder (its files keep
    their path below it in `place`; hidden files, and the output folder `out_dir` when it
    lies inside, are skipped); `origin` names the input in errors (the path, or a file list
    and line)."""
    known = MEL_SUFFIXES + AUDIO_EXTENSIONS
    where = "" if origin == str(path) else f"{path}: "
    if path.is_dir():
        found = _files_below(path, known)
        outputs = out_dir.resolve()
        if outputs != path.resolve() and outputs.is_relative_to(path.resolve()):
            # earlier outputs are not inputs (a rerun with --force replaces them)
            kept = [p for p in found if not p.resolve().is_relative_to(outputs)]
            if len(kept) < len(found):
                log.info(
                    "%s: left out %d file(s) in the output folder", path, len(found) - len(kept)
                )
            found = kept
        earlier = [p for p in found if p.suffix.lower() == ".wav" and is_synthesized(p)]
        if earlier:  # synthesized by an earlier run: taken in, they would move every seed
            left_out = set(earlier)
            found = [p for p in found if p not in left_out]
            log.info("%s: left out %d earlier output(s) of vocoder", path, len(earlier))
            if not found:
                raise InputError(
                    origin, f"{where}holds only audio that vocoder synthesized ({len(earlier)})"
                )
        audio = [p for p in found if p.suffix.lower() in AUDIO_EXTENSIONS]
        if audio and len(audio) < len(found):
            # audio beside mels is most likely earlier outputs: taken as inputs, they would
            # be synthesized again and move every later file's seed
            found = [p for p in found if p.suffix.lower() not in AUDIO_EXTENSIONS]
            log.info(
                "%s: left out %d audio file(s) in this folder of mels (name them, or a folder "
                "of audio only, to copy-synthesize them)",
                path,
                len(audio),
            )
        if not found:
            raise InputError(
                origin, f"{where}no mel ({', '.join(MEL_SUFFIXES)}) or audio files in it"
            )
        return [
            Job(
                p,
                place / p.relative_to(path).with_suffix(".wav"),
                p.suffix.lower() in AUDIO_EXTENSIONS,
            )
            for p in found
        ]
    if path.is_file():
        if path.suffix.lower() not in known:
            raise InputError(
                origin,
                f"{where}not a mel ({', '.join(MEL_SUFFIXES)}) or audio file "
                f"({', '.join(AUDIO_EXTENSIONS)})",
            )
        output = place.with_name(place.name + ".wav")
        return [Job(path, output, path.suffix.lower() in AUDIO_EXTENSIONS)]
    raise InputError(origin, f"{where}no such file or folder")


def _files_below(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files with one of `suffixes` below `folder`, sorted; hidden files and folders
    left out, linked folders followed (each once). A folder that cannot be read or a broken
    link is an `InputError`: its files are not left out unsaid."""

    def unreadable(error: OSError) -> None:
        problem = (error.strerror or str(error)).lower()
        raise InputError(error.filename, f"cannot read this folder ({problem})")

    found, walked = [], set()
    for root, folders, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:  # a link back up the tree, or a second link to one folder
            folders[:] = []
            continue
        walked.add(real)
        # in one order on every file system, real folders before links (to them, maybe)
        folders[:] = sorted(
            (name for name in folders if not name.startswith(".")),
            key=lambda name: (os.path.islink(os.path.join(root, name)), name),
        )
        for name in files:
            file = Path(root) / name
            if name.startswith("."):
                continue
            if not file.exists():  # a link to a file or folder that is not there
                raise InputError(file, f"a broken link (to {os.readlink(file)})")
            if file.suffix.lower() in suffixes:
                found.append(file)
    return sorted(found)


def _read_file_list(listing: Path, out_dir: Path, missing: list[InputError]) -> list[Job]:
    """The jobs of a `.txt` file list: one mel or audio file (or folder) per line, relative
    paths resolved against the list's folder; blank lines and lines starting with # are
    skipped. Relative entries keep their path below the list's folder in `out_dir`
    (`a/b.npy` -> `out_dir/a/b.wav`), others (absolute, or reaching above the list's
    folder) go to `out_dir` by name. Errors name the list and the line."""
    try:
        text = listing.read_text(encoding=TEXT_ENCODING)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(listing, f"cannot read the file list ({first_line(e)})") from None
    jobs: list[Job] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        origin = f"{listing}:{number}"
        given = Path(entry)
        if given.suffix.lower() == LIST_EXTENSION:
            raise InputError(origin, f"{entry}: a file list cannot name another file list")
        path = given if given.is_absolute() else listing.parent / given
        below = not given.is_absolute() and ".." not in given.parts
        if path.is_dir():
            place = given if below else Path()
        else:
            place = given.with_suffix("") if below else Path(given.stem)
        jobs.extend(_found(path, out_dir / place, origin, out_dir, missing))
    if not jobs and not missing:
        raise InputError(listing, "the file list names no files")
    return jobs


def _check_options(args: argparse.Namespace) -> None:
    if args.force and args.skip_existing:
        raise ConfigError("--force and --skip-existing contradict each other; pick one")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_sigma(args.sigma, "--sigma")
    if not 0 <= args.denoise < math.inf:
        raise ConfigError(f"--denoise must be a finite number >= 0, got {args.denoise}")
    if args.chunk_seconds is not None and not 0 < args.chunk_seconds < math.inf:
        raise ConfigError(
            f"--chunk-seconds must be a finite number above 0, got {args.chunk_seconds}"
        )
    if args.peak_normalize is not None and not QUIETEST_PEAK_DBFS <= args.peak_normalize <= 0:
        raise ConfigError(
            f"--peak-normalize must be between {QUIETEST_PEAK_DBFS:g} and 0 dBFS (16-bit PCM "
            f"holds no quieter peak), got {args.peak_normalize}"
        )
    if args.mel_format == "meanvar" and args.stats is None:
        raise ConfigError("--mel-format meanvar needs --stats FILE")
    if args.stats is not None and args.mel_format != "meanvar":
        raise ConfigError("--stats applies to --mel-format meanvar only")
    if args.db_normalization is not None and args.mel_format != "db-normalized":
        raise ConfigError("--db-normalization applies to --mel-format db-normalized only")
    if args.db_normalization is not None:
        DbNormalization.parse(args.db_normalization, "--db-normalization")  # before the model
    if args.out.exists() and not args.out.is_dir():
        raise InputError(args.out, "exists and is not a folder")
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        raise ConfigError(f"--device {args.device}: {e}") from None
    if args.precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 is for GPUs; on the CPU use bf16 or fp32")


def _load_stats(args: argparse.Namespace, synth: Synthesizer) -> MeanVarStats | None:
    if args.stats is None:
        return None
    stats = load_stats(args.stats)
    if stats.mean.numel() != synth.n_mels:
        problem = f"statistics have {stats.mean.numel()} bins, the model {synth.n_mels}"
        raise InputError(args.stats, problem)
    return stats


def _check_inputs(
    jobs: list[Job],
    synth: Synthesizer,
    args,
    stats,
    missing: list[InputError],
    given: int,
) -> int:
    """Read and check every input (its frames and output length noted), saying once what
    reading changes (resampling, mixdown) or what a mel's range suggests, and each input
    that cannot be read or (`missing`) found, of the `given` inputs; returns how many mels
    had their range warned about."""
    unusable: list[VocoderError | OSError] = []
    range_warnings = 0
    # disable=None: progress bars on terminals only, so logs and errors stay clean
    for job in tqdm(jobs, desc="reading", unit="file", file=sys.stderr, leave=False, disable=None):
        try:
            if job.is_audio:
                changes = audio_info(job.source).changes_for(synth.sample_rate)
                if changes:
                    log.info("%s: %s", job.source, changes)
            mel, samples = _read_mel(job, synth, args, stats)
        except (VocoderError, OSError) as e:  # every unusable input is said, not the first
            unusable.append(e)
            continue
        if not job.is_audio:
            warning = check_mel_range(mel)
            if warning:  # the library's warning, worded with this command's flags
                log.warning("%s: %s", job.source, cli_problem(warning.problem, [warning.remedy]))
                range_warnings += 1
        job.frames, job.samples = mel.shape[-1], samples
    problem = "found or used" if missing else "used"
    report_all([*missing, *unusable], f"of {given} inputs cannot be {problem}")
    return range_warnings


def _read_again(job: Job, synth: Synthesizer, args, stats) -> torch.Tensor:
    with _quiet(logging.getLogger("vocoder.melio")):  # what it notes, it noted at the first read
        mel, samples = _read_mel(job, synth, args, stats)
    if (mel.shape[-1], samples) != (job.frames, job.samples):
        raise InputError(job.source, "changed while the run was synthesizing")
    return mel


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` drops every record meanwhile."""
    logger.addFilter(_drop)
    try:
        yield
    finally:
        logger.removeFilter(_drop)


def _drop(record: logging.LogRecord) -> bool:
    return False


def _read_mel(job: Job, synth: Synthesizer, args, stats) -> tuple[torch.Tensor, int]:
    """(the mel of `job`'s input, its output length in samples)."""
    if job.is_audio:
        audio = load_audio(job.source, synth.sample_rate)
        mel = synth.mel_from_audio(audio, source=str(job.source))
        return mel, min(audio.shape[-1], mel.shape[-1] * synth.hop_length)
    db = (
        DbNormalization.parse(args.db_normalization, "--db-normalization")
        if args.db_normalization
        else None
    )
    mel = load_mel(job.source, synth.n_mels, args.mel_format, stats, db=db)
    mel = synth.validate_mel(mel, source=str(job.source), warn=False)[0]
    return mel, mel.shape[-1] * synth.hop_length


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    keep_freed_memory()
    missing: list[InputError] = []  # said with the inputs that cannot be read
    jobs = collect_inputs(args.inputs, args.out, missing)
    given = len(jobs) + len(missing)
    try:
        _check_outputs(jobs, refuse=not (args.force or args.skip_existing))
    except InputError as e:  # said with the inputs not found, not before them
        report_all([*missing, e], "inputs or outputs cannot be used")
    for folder in {job.output.parent for job in jobs}:  # a killed run's half-written files
        remove_orphaned_temporaries(folder)
    if args.skip_existing:
        # an existing output is vocoder's own: `_check_outputs` refused any other file
        left = [job for job in jobs if not job.output.exists()]
        if len(left) < len(jobs):
            print(f"left out {len(jobs) - len(left)} of {given} input(s): their outputs exist")
        jobs = left
        if not jobs:
            report_all(missing, "inputs cannot be found or used")
            return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with _sigterm_as_exit(), output_folders(job.output.parent for job in jobs):
        return _synthesize(jobs, args, missing, given, resumed=len(jobs) < given - len(missing))


def _check_outputs(jobs: list[Job], refuse: bool) -> None:
    """No output may be a folder, nor an existing file that is not audio vocoder synthesized
    (a recording beside its mel: neither `--force` replaces it nor `--skip-existing` takes
    it for done), nor (`refuse`) any existing file."""
    blocked = [job for job in jobs if job.output.is_dir()]
    if blocked:
        job = blocked[0]
        raise InputError(job.output, f"is a folder, where the audio of {job.source} goes")
    foreign = [j.output for j in jobs if j.output.exists() and not is_synthesized(j.output)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise InputError(
            foreign[0],
            f"exists{more} and is not audio vocoder synthesized (a recording, or an output of a "
            "vocoder older than the tag); it is neither replaced nor skipped: choose another "
            "--out folder, or move it aside",
        )
    if refuse:
        refuse_existing(job.output for job in jobs)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (exit code 143), so folders made for the run are removed
    and no temporary file stays behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received: list[int] = []

    def stop(signum, frame):
        if not received:  # said as Ctrl-C's "interrupted" is
            print("terminated", file=sys.stderr)
        received.append(signum)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except Exception:
        # raised inside a library call, the exit can come back as that library's error
        if received:
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Levels:
    """Samples beyond what 16-bit PCM stores (clipped when written), and the peak."""

    files: int = 0
    clipped_files: int = 0
    clipped: int = 0
    peak: float = 0.0

    def add(self, audio: torch.Tensor) -> str:
        """Count one output's clipped samples; a note for its line ("" when none)."""
        clipped = int(pcm16_clipped(audio).sum())
        peak = float(audio.abs().max()) if audio.numel() else 0.0
        self.files += 1
        self.peak = max(self.peak, peak)
        if not clipped:
            return ""
        self.clipped_files += 1
        self.clipped += clipped
        return f"; {clipped} sample(s) clipped, peak {peak:.3f} ({_dbfs(peak):+.1f} dBFS)"

    def summary(self) -> str:
        if not self.clipped:
            return f"peak {self.peak:.3f} ({_dbfs(self.peak):+.1f} dBFS), nothing clipped"
        return (
            f"{self.clipped_files} of {self.files} file(s) clipped ({self.clipped} sample(s), "
            f"peak {self.peak:.3f}, {_dbfs(self.peak):+.1f} dBFS; see --peak-normalize)"
        )


def _dbfs(peak: float) -> float:
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def normalize_peak(audio: torch.Tensor, dbfs: float) -> torch.Tensor:
    """`audio` scaled so that its largest magnitude is `dbfs` dB below full scale; 0 dBFS is
    the largest level 16-bit PCM stores for either sign (32767 / 32768)."""
    peak = float(audio.abs().max())
    target = min(10 ** (dbfs / 20), PCM16_MAX)
    return audio if peak == 0 else audio * (target / peak)


def _precision_note(asked: str | None, synth: Synthesizer) -> str:
    if asked is None and synth.precision == "bf16":
        return " (default: this CPU has bf16 units; --precision fp32 for full precision)"
    return ""


def _synthesize(
    jobs: list[Job],
    args: argparse.Namespace,
    missing: list[InputError],
    given: int,
    resumed: bool = False,
) -> int:
    """Synthesize `jobs`; `resumed`: `--skip-existing` left out some whose output exists."""
    device = resolve_device(args.device)
    precision = args.precision or default_precision(device)
    synth = Synthesizer.load(args.model, device=device, precision=precision)
    stats = _load_stats(args, synth)
    range_warnings = _check_inputs(jobs, synth, args, stats, missing, given)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    if resumed and args.seed is None:
        log.warning(
            "no --seed: the files left get new noise, not what the interrupted run would have "
            "given them (it printed its seed)"
        )
    chunk = None
    if args.chunk_seconds is not None:
        chunk = max(1, round(args.chunk_seconds * synth.sample_rate / synth.hop_length))
    print(
        f"model {synth.name} ({synth.parameter_count / 1e6:.2f} M parameters) on "
        f"{synth.device.type}, {synth.precision}{_precision_note(args.precision, synth)}; "
        f"{len(jobs)} file(s); seed {seed}"
    )
    batch_size = args.batch_size or default_batch_size(synth.device)
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].frames)
    total_audio = total_time = 0.0
    levels = Levels()
    bar = tqdm(total=len(jobs), desc="synthesizing", unit="file", file=sys.stderr, disable=None)
    written = meanwhile = 0  # meanwhile: outputs another run wrote (--skip-existing)
    try:
        with bar:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                if args.skip_existing:  # another run sharing the folder may have written some
                    _check_outputs([jobs[i] for i in batch], refuse=False)  # no recording
                    left = [i for i in batch if not jobs[i].output.exists()]
                    meanwhile += len(batch) - len(left)
                    bar.update(len(batch) - len(left))
                    batch = left
                    if not batch:
                        continue
                mels = [_read_again(jobs[i], synth, args, stats) for i in batch]
                began = time.perf_counter()
                audio = synth.synthesize_batch(
                    mels,
                    sigma=args.sigma,
                    seed=[seed + jobs[i].index for i in batch],
                    denoise=args.denoise,
                    chunk_frames=chunk,
                    sources=[str(jobs[i].source) for i in batch],
                    warn=False,  # warned while reading
                )
                elapsed = time.perf_counter() - began
                batch_samples = sum(jobs[i].samples for i in batch)
                for i, a in zip(batch, audio, strict=True):
                    job = jobs[i]
                    a = a[: job.samples].float()
                    if args.peak_normalize is not None:
                        a = normalize_peak(a, args.peak_normalize)
                    try:
                        save_audio(
                            job.output, a, synth.sample_rate, overwrite=args.force, synthesized=True
                        )
                        written += 1  # at once: a Ctrl-C from here on counts this file
                    except InputError:
                        if not (args.skip_existing and is_synthesized(job.output)):
                            raise
                        meanwhile += 1  # written by another run (the same audio at its seed)
                        total_audio -= job.samples / synth.sample_rate
                        bar.update(1)
                        continue
                    note = levels.add(a)
                    seconds = job.samples / synth.sample_rate
                    share = max(elapsed * job.samples / batch_samples, 1e-9)
                    bar.write(
                        f"{job.output}  {seconds:.2f} s in {share:.2f} s "
                        f"({seconds / share:.1f}x real time){note}",
                        file=sys.stdout,
                    )
                    bar.update(1)
                total_audio += batch_samples / synth.sample_rate
                total_time += elapsed
    except BaseException:
        if 0 < written < len(jobs):  # say how to finish what was begun
            instead = " instead of --force" if args.force else ""
            print(
                f"wrote {written} of {len(jobs)} file(s); the same command with "
                f"--skip-existing --seed {seed}{instead} writes the others as this run "
                "would have",
                file=sys.stderr,
            )
        raise
    others = f" ({meanwhile} more written meanwhile by another run)" if meanwhile else ""
    print(
        f"synthesized {written} file(s){others}, {total_audio:.2f} s of audio in "
        f"{total_time:.2f} s "
        f"({total_audio / max(total_time, 1e-9):.1f}x real time); outputs in {args.out}; "
        f"{levels.summary()}"
    )
    if range_warnings:  # one line a file scrolls away over thousands of files
        log.warning(
            "%d of %d mel(s) look like another mel convention (each said above): check "
            "--mel-format",
            range_warnings,
            sum(not job.is_audio for job in jobs),
        )
    return 0
