"""Inference: compile a trained model, incremental synthesis, CUDA fast path, long form."""
