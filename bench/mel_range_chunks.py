"""How often the mel range check misfires on short chunks of natural-log mels.

    python bench/mel_range_chunks.py --wavs ../shared/data/ljspeech-mini/wavs --files 40

A streaming TTS model hands the vocoder its mel a few frames at a time. This computes the
natural-log mel (tacotron2 convention) of --files recordings, cuts it into chunks of each
length (half-overlapping), and counts the chunks `check_mel_range` warns about, by its
verdict. Every chunk is a correct mel: each warning is a false alarm.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from vocoder.audio import load_audio
from vocoder.features import mel_spectrogram
from vocoder.melio import check_mel_range

LENGTHS = (1, 5, 10, 16, 20, 24, 32, 40, 48, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wavs", type=Path, required=True, help="a folder of recordings")
    parser.add_argument("--files", type=int, default=40, help="recordings to read (default 40)")
    args = parser.parse_args()
    paths = sorted(args.wavs.glob("*.wav"))[: args.files]
    mels = [mel_spectrogram(load_audio(p, sample_rate=22050)) for p in paths]
    print(f"{len(mels)} recordings of {args.wavs}, natural-log mels (tacotron2)")
    print(f"{'frames':>6}  {'chunks':>7}  {'warned':>7}  rate     warnings")
    for frames in LENGTHS:
        kinds: Counter[str] = Counter()
        chunks = 0
        for mel in mels:
            for start in range(0, mel.shape[-1] - frames + 1, max(1, frames // 2)):
                chunks += 1
                warning = check_mel_range(mel[..., start : start + frames])
                if warning is not None:
                    kinds[warning.problem.rsplit(": ", 1)[-1][:40]] += 1  # the verdict
        warned = sum(kinds.values())
        shown = ", ".join(f"{k!r} x{n}" for k, n in kinds.most_common(2))
        print(f"{frames:>6}  {chunks:>7}  {warned:>7}  {warned / chunks:.4f}   {shown}")


if __name__ == "__main__":
    main()
