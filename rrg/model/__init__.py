"""The model: LLaVA-Med loaded as transformers' Llava, its processor, prompts, adapters and kernels."""
