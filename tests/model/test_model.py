"""Loading: dtype, generation settings, 4-bit settings, and that the image reaches the model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from rrg.io import InputError
from rrg.model.config import IMAGE_TOKEN_ID
from rrg.model.kernels.attention import ATTENTION
from rrg.model.load import UNQUANTIZED_MODULES, load_base_model, load_model, quantization_config
from rrg.model.processor import ImageTokenError, build_processor, build_tokenizer, check_image_tokens
from rrg.model.prompts import render_prompt
from rrg.model.tiny import tiny_config


@pytest.mark.slow
def test_load_model_from_original_folder(tiny_original, tmp_path, monkeypatch):
    monkeypatch.setenv("RRG_CACHE", str(tmp_path))
    model, processor = load_model(str(tiny_original))
    assert isinstance(processor, LlavaProcessor)
    assert model.dtype == torch.float32  # CPU default
    assert not model.training
    assert model.config.image_token_id == IMAGE_TOKEN_ID
    assert model.generation_config.suppress_tokens == [IMAGE_TOKEN_ID]
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 0
    assert model.config._attn_implementation == ATTENTION  # rrg.model.kernels.attention: SDPA, decode without KV copies
    assert load_base_model(str(tiny_original), dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.slow
def test_sdpa_models_turn_cudnn_attention_off(converted):
    """cuDNN attention builds a graph per new sequence length; loading with SDPA turns it off process-wide."""
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        load_base_model(str(converted), attn_implementation="eager")
        assert torch.backends.cuda.cudnn_sdp_enabled()
        load_base_model(str(converted))  # ATTENTION, this project's SDPA
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)


@pytest.mark.slow
def test_image_token_is_never_generated(converted, xray_paths):
    model, processor = load_model(str(converted))

    def favour_image_token(module, inputs, logits):  # make `<image>` the most likely token everywhere
        logits = logits.clone()
        logits[..., IMAGE_TOKEN_ID] += 1e4
        return logits

    model.lm_head.register_forward_hook(favour_image_token)
    batch = processor(
        text=[render_prompt("Report?")], images=[Image.open(xray_paths[0])], return_tensors="pt"
    )
    with torch.no_grad():
        unconstrained = model(**batch).logits[0, -1].argmax()
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert int(unconstrained) == IMAGE_TOKEN_ID  # the setup really favours `<image>`...
    assert IMAGE_TOKEN_ID not in out[0, batch["input_ids"].shape[1] :].tolist()  # ...and it is suppressed


@pytest.mark.slow
def test_different_images_give_different_logits(converted, xray_paths):
    model, processor = load_model(str(converted))
    prompt = render_prompt("Write the report.")
    logits = []
    for path in xray_paths[:2]:
        batch = processor(text=[prompt], images=[Image.open(path).convert("RGB")], return_tensors="pt")
        with torch.no_grad():
            logits.append(model(**batch).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


def test_image_token_guard_with_real_336_processor(tokenizer_dir, xray_paths):
    processor = build_processor(build_tokenizer(tokenizer_dir))  # CLIP 336 / 14: 576 tokens per image
    images = [Image.open(p).convert("RGB") for p in xray_paths[:2]]
    batch = processor(text=[render_prompt("Report?", n_images=2)], images=images, return_tensors="pt")
    ids = batch["input_ids"][0]
    assert batch["pixel_values"].shape[-2:] == (336, 336)
    check_image_tokens(ids, n_images=2, image_token=IMAGE_TOKEN_ID, per_image=576)  # 1152: fine
    assert int((ids == IMAGE_TOKEN_ID).sum()) == 1152
    with pytest.raises(ImageTokenError, match="1152 image tokens for 1 image"):
        check_image_tokens(ids, n_images=1, image_token=IMAGE_TOKEN_ID, per_image=576)
    # `<image>` tokenised as plain text (the reference's bug): one token, not 576.
    raw = processor.tokenizer(render_prompt("Report?"))["input_ids"]
    with pytest.raises(ImageTokenError):
        check_image_tokens(raw, n_images=1, image_token=IMAGE_TOKEN_ID, per_image=576)


def test_4bit_settings():
    config = quantization_config()
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(config.llm_int8_skip_modules) == set(UNQUANTIZED_MODULES)


def test_4bit_skip_patterns_keep_vision_projector_and_head_unquantised():
    # transformers' own matcher (the one its bitsandbytes quantizer applies to every module name): a bare
    # "vision_tower" pattern would let CLIP be quantised, as happened on transformers 5.17.
    from transformers.quantizers.quantizers_utils import should_convert_module

    real = LlavaForConditionalGeneration(tiny_config())
    linear_names = [name for name, module in real.named_modules() if isinstance(module, torch.nn.Linear)]
    kept = [name for name in linear_names if not should_convert_module(name, UNQUANTIZED_MODULES)]
    quantised = [name for name in linear_names if should_convert_module(name, UNQUANTIZED_MODULES)]
    assert kept and all(
        n.startswith(("model.vision_tower.", "model.multi_modal_projector.", "lm_head")) for n in kept
    )
    assert quantised and all(n.startswith("model.language_model.layers.") for n in quantised)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error message")
def test_4bit_needs_cuda(converted):
    # An InputError, which every entry point prints as one line (a RuntimeError was a traceback).
    with pytest.raises(InputError, match="CUDA"):
        load_base_model(str(converted), load_in_4bit=True)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 4-bit needs a CUDA GPU")
def test_4bit_quantises_only_the_language_model(converted):
    import bitsandbytes as bnb

    model = load_base_model(str(converted), load_in_4bit=True)
    layer = model.model.language_model.layers[0]
    assert isinstance(layer.self_attn.q_proj, bnb.nn.Linear4bit)
    assert not isinstance(model.model.vision_tower.encoder.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert not isinstance(model.model.multi_modal_projector.linear_1, bnb.nn.Linear4bit)
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
