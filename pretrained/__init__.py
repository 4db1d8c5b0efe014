"""The shipped weights and their registry (data, no code), installed as `vocoder.shipped`."""
