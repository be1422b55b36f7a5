"""Training support: checkpoints, batching, the non-finite-loss guard, the model card."""
