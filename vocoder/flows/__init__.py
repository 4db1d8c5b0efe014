"""Invertible building blocks. Each maps (x, context) -> (y, logdet) and back."""
