"""Training: the trainer, checkpoints, distributed set-up, logging."""
