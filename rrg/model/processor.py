"""Tokenizer, image processor and processor for LLaVA-Med v1.5 in transformers' Llava layout.

The Hub checkpoint ships only a SentencePiece `tokenizer.model` (32,000 tokens, no pad token, no
`<image>` token, no chat template, no preprocessor config). We add `<image>` as id 32000, pad with
`<unk>` (as LLaVA-Med did; padding is masked out anyway), attach the chat template, and use the
LLaVA "pad" image preprocessing: pad to a square with the CLIP mean colour, resize to 336, CLIP-normalise.
One 336 image gives (336/14)^2 = 576 patch features (CLS dropped), hence 576 `<image>` tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from transformers import LlamaTokenizerFast, LlavaProcessor
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from rrg.model.prompts import CHAT_TEMPLATE, IMAGE_TOKEN

CLIP_IMAGE_SIZE = 336
CLIP_PATCH_SIZE = 14


class ImageTokenError(RuntimeError):
    """A sample's `<image>` tokens do not match its images: the model would not see the X-ray."""


def build_tokenizer(tokenizer_dir: str | os.PathLike) -> LlamaTokenizerFast:
    """Fast tokenizer from a folder holding LLaVA-Med's SentencePiece `tokenizer.model`."""
    # A bare LlamaTokenizer(vocab_file=...) silently ignores the file in transformers 5; from_pretrained
    # on the folder converts it properly (needs sentencepiece). legacy=True tokenises text after a
    # special token the way LLaVA-Med's own tokenizer_image_token did ("<image>\n" -> <image> ▁ \n),
    # so prompts are token-for-token those the model was trained on (tests/model/test_prompts.py).
    tokenizer = LlamaTokenizerFast.from_pretrained(
        str(tokenizer_dir), add_bos_token=True, add_eos_token=False, legacy=True
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "right"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_image_processor(image_size: int = CLIP_IMAGE_SIZE) -> LlavaImageProcessorPil:
    """LLaVA's `image_aspect_ratio: pad` preprocessing: square pad (CLIP mean colour), resize, normalise.

    The PIL backend needs no torchvision and runs in DataLoader workers.
    """
    return LlavaImageProcessorPil(
        do_pad=True,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def build_processor(
    tokenizer: LlamaTokenizerFast, image_size: int = CLIP_IMAGE_SIZE, patch_size: int = CLIP_PATCH_SIZE
) -> LlavaProcessor:
    return LlavaProcessor(
        image_processor=build_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",  # drop CLS: patch features only
        num_additional_image_tokens=1,  # CLIP's CLS token, removed again by "default"
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def load_processor(path: str | os.PathLike) -> LlavaProcessor:
    """Processor of a converted model folder, rebuilt from its tokenizer and vision config.

    Rebuilding (rather than AutoProcessor) keeps the PIL image processor whatever transformers version
    saved the folder, so it works without torchvision and can never silently drop the square padding.
    """
    from transformers import AutoConfig

    tokenizer = LlamaTokenizerFast.from_pretrained(str(path))
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        raise ValueError(
            f"{path}: tokenizer has no {IMAGE_TOKEN} token; is this a converted LLaVA-Med folder?"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    vision = AutoConfig.from_pretrained(str(path)).vision_config
    return build_processor(tokenizer, image_size=vision.image_size, patch_size=vision.patch_size)


def image_token_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def tokens_per_image(model_config) -> int:
    """Image tokens one view becomes: one per CLIP patch (CLS dropped); 576 for LLaVA-Med."""
    vision = model_config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def check_image_tokens(
    input_ids: torch.Tensor | Sequence[int],
    n_images: int,
    image_token: int,
    per_image: int,
    where: str = "",
) -> None:
    """Fail loudly unless a sample holds exactly per_image x n_images image tokens.

    This is the guard the reference implementation lacked: its training tokenised `<image>` as plain
    text, so the model never saw the X-ray. Called for every sample in training and generation.
    """
    ids = torch.as_tensor(input_ids)
    found = int((ids == image_token).sum())
    expected = per_image * n_images
    if found != expected:
        place = f"{where}: " if where else ""
        raise ImageTokenError(
            f"{place}{found} image tokens for {n_images} image(s); expected {expected} "
            f"({per_image} per image). The image would not reach the model."
        )
