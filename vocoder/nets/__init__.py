"""Density estimators: the 2-D WaveNet (WaveFlow/NanoFlow), WN (WaveGlow), mel upsampler."""
