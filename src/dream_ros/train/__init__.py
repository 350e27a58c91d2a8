"""Training loop, distributed training, checkpoints."""
