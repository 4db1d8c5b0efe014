"""vocoder: flow-based neural vocoders (WaveFlow, NanoFlow, WaveGlow) in PyTorch."""

__version__ = "0.1.0"
