"""`python -m vocoder` (and `torchrun -m vocoder train ...`)."""

from vocoder.cli import entry

entry()
