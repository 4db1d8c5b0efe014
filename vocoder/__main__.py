"""`python -m vocoder` (and `torchrun -m vocoder train ...`)."""

import sys

from vocoder.cli import main

sys.exit(main())
