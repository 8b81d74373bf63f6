"""`sdpa_gqa` attention: the same outputs as transformers' SDPA, without copying key/value heads at decode."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration
from transformers.integrations import sdpa_attention

from rrg.generate.batch import GenerationSettings, encode_batch
from rrg.model.kernels.attention import ATTENTION, sdpa_gqa_attention
from rrg.model.load import load_base_model
from rrg.model.processor import load_processor


class GroupedHeads(torch.nn.Module):
    num_key_value_groups = 4
    is_causal = True


def reference_attention(query, key, value, mask, scale):
    """Plain attention with each key/value head repeated for its 4 query heads (repeat_kv's order)."""
    key = key.repeat_interleave(4, dim=1)
    value = value.repeat_interleave(4, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


@pytest.mark.parametrize("masked", [True, False])
def test_decode_step_matches_repeated_heads_and_copies_nothing(monkeypatch, masked):
    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 3, 8, 2, 11, 16
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(2, batch, kv_heads, length, dim)
    mask = None
    if masked:  # left padding: row 1 starts 4 tokens late, row 2 two tokens late
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        mask[1, ..., :4] = False
        mask[2, ..., :2] = False

    def no_copies(*args, **kwargs):
        raise AssertionError("a decode step repeated the key/value heads")

    monkeypatch.setattr(sdpa_attention, "repeat_kv", no_copies)
    out, _ = sdpa_gqa_attention(GroupedHeads(), query, key, value, mask, scaling=0.25)
    assert out.shape == (batch, 1, heads, dim)
    torch.testing.assert_close(out, reference_attention(query, key, value, mask, 0.25), rtol=1e-5, atol=1e-6)


def test_prompt_pass_is_transformers_sdpa():
    torch.manual_seed(0)
    query = torch.randn(2, 8, 5, 16)
    key, value = torch.randn(2, 2, 2, 5, 16)
    ours, _ = sdpa_gqa_attention(GroupedHeads(), query, key, value, None, scaling=0.25)
    theirs, _ = sdpa_attention.sdpa_attention_forward(GroupedHeads(), query, key, value, None, scaling=0.25)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("cache", [None, "static"])
def test_padded_batch_generates_what_sdpa_generates(tiny_model_dir, xray_paths, cache):
    """Left-padded prompts of different lengths: the mask must reach attention (registered mask builder)."""
    from PIL import Image

    processor = load_processor(tiny_model_dir)
    questions = ["Describe.", "You are a radiologist. Write the full report with Findings and Impression."]
    views = [[Image.open(p).convert("RGB")] for p in xray_paths[:2]]
    inputs = encode_batch(processor, questions, views, per_image=16)
    assert (inputs["attention_mask"][:, 0] == 0).any()  # really padded
    settings = GenerationSettings(max_new_tokens=6, batch_size=2, cache_implementation=cache)
    results = {}
    for attention in ("sdpa", ATTENTION):
        model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, attn_implementation=attention)
        assert model.config.text_config._attn_implementation == attention
        with torch.no_grad():
            results[attention] = model.generate(
                **inputs, **settings.generate_kwargs(), output_scores=True, return_dict_in_generate=True
            )
    assert torch.equal(results["sdpa"].sequences, results[ATTENTION].sequences)
    for ours, theirs in zip(results[ATTENTION].scores, results["sdpa"].scores):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_models_load_with_it_by_default(tiny_model_dir):
    assert load_base_model(str(tiny_model_dir)).config.text_config._attn_implementation == ATTENTION
