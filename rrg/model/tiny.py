"""Tiny random LLaVA-Med-shaped models for tests, the CPU smoke run and the benchmark's architecture.

Same classes as the real model (CLIP vision tower, 2-layer GELU projector, Mistral decoder, the
real 32,000-token SentencePiece tokenizer plus `<image>`), with a few small layers. No weights are
downloaded: everything is built from configs."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from rrg.model.config import IMAGE_TOKEN_ID, llava_med_config
from rrg.model.processor import build_processor, build_tokenizer


def tiny_config(image_size: int = 56) -> LlavaConfig:
    """A few-layer model of the same architecture: fast on a CPU, 16 image tokens at 56 px."""
    return llava_med_config(
        text_layers=2,
        hidden_size=64,
        intermediate_size=128,
        heads=4,
        kv_heads=2,
        vision_layers=3,
        vision_hidden=32,
        vision_intermediate=64,
        vision_heads=2,
        image_size=image_size,
    )


def generation_config() -> GenerationConfig:
    # `<image>` must never be generated: its output row is untrained.
    return GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, suppress_tokens=[IMAGE_TOKEN_ID])


def build_tiny_llava(
    out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, image_size: int = 56, seed: int = 0
) -> Path:
    """Write a tiny random HF Llava folder (config, safetensors, tokenizer, processor) and return it."""
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(tiny_config(image_size)).eval()
    model.generation_config = generation_config()
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer = build_tokenizer(tokenizer_dir)
    processor = build_processor(tokenizer, image_size=image_size)
    processor.save_pretrained(out)
    return out
