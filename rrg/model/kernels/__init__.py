"""Speed kernels for training and generation: attention, KV cache, fused Liger ops, FP8."""
