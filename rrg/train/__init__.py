"""Training: settings, setup, the step (loss, accumulation), optimizer, checkpoints, batches."""
