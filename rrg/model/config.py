"""The LLaVA-Med v1.5 (Mistral-7B) architecture as a transformers LlavaConfig."""

from __future__ import annotations

from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    MistralConfig,
)

IMAGE_TOKEN_ID = 32000  # `<image>`, appended after the 32,000 SentencePiece tokens
VOCAB_SIZE = 32001


def llava_med_config(
    *,
    text_layers: int = 32,
    hidden_size: int = 4096,
    intermediate_size: int = 14336,
    heads: int = 32,
    kv_heads: int = 8,
    vision_layers: int = 24,
    vision_hidden: int = 1024,
    vision_intermediate: int = 4096,
    vision_heads: int = 16,
    image_size: int = 336,
    patch_size: int = 14,
) -> LlavaConfig:
    """LlavaConfig of LLaVA-Med-v1.5-Mistral-7B; the defaults are the real sizes.

    CLIP ViT-L/14-336 (features from layer -2, CLS dropped), mlp2x_gelu projector, Mistral-7B with
    rope_theta 1e6 and no sliding window (LLaVA-Med's config.json).
    """
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_intermediate,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=768,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = MistralConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        rope_theta=1e6,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN_ID,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        multimodal_projector_bias=True,
        image_seq_length=(image_size // patch_size) ** 2,
        tie_word_embeddings=False,
    )
