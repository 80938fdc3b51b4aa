"""Weights & Biases tracking for selfsup runs, from the lifecycle hooks (opt in with ``SELFSUP_WANDB=1``)."""
