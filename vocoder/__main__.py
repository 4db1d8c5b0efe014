"""`python -m vocoder` (and `torchrun -m vocoder train ...`)."""

from vocoder.cli import end_process, main

end_process(main())
