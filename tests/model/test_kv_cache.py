"""PreallocatedCache: what DynamicCache holds and generates, without copying the cache at each step."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import DynamicCache, LlavaForConditionalGeneration

from rrg.generate import batch as generate
from rrg.generate.batch import GenerationSettings, encode_batch, generate_from_inputs
from rrg.model.kernels.kv_cache import PreallocatedCache, PreallocatedLayer
from rrg.model.processor import load_processor


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    return model, load_processor(tiny_model_dir)


@pytest.fixture(scope="module")
def padded_inputs(tiny, xray_paths):
    _, processor = tiny
    questions = ["Describe.", "You are a radiologist. Write the full report with Findings and Impression."]
    views = [[Image.open(p).convert("RGB")] for p in xray_paths[:2]]
    inputs = encode_batch(processor, questions, views, per_image=16)
    assert (inputs["attention_mask"][:, 0] == 0).any()  # left-padded
    return inputs


def layers(model) -> int:
    return model.config.get_text_config().num_hidden_layers


@pytest.mark.slow
@pytest.mark.parametrize("num_beams", [1, 2])
def test_generates_what_the_dynamic_cache_generates(tiny, padded_inputs, num_beams):
    model, _ = tiny
    n = 6
    kwargs = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "num_beams": num_beams}
    kwargs |= {"output_scores": True, "return_dict_in_generate": True}
    capacity = padded_inputs["input_ids"].shape[1] + n
    with torch.no_grad():
        theirs = model.generate(**padded_inputs, past_key_values=DynamicCache(), **kwargs)
        ours = model.generate(
            **padded_inputs, past_key_values=PreallocatedCache(layers(model), capacity), **kwargs
        )
    assert torch.equal(ours.sequences, theirs.sequences)
    for a, b in zip(ours.scores, theirs.scores):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_decode_steps_write_into_one_buffer(tiny, padded_inputs):
    model, _ = tiny
    prompt = padded_inputs["input_ids"].shape[1]
    ours, theirs = PreallocatedCache(layers(model), prompt + 3), DynamicCache()
    with torch.no_grad():
        for cache in (ours, theirs):
            out = model(**padded_inputs, past_key_values=cache, use_cache=True)
            mask = padded_inputs["attention_mask"]
            for _ in range(3):
                token = out.logits[:, -1:].argmax(-1)
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                out = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
                if cache is ours:
                    for layer in ours.layers:  # still the buffer allocated at the prompt: no copy
                        assert layer.keys.data_ptr() == layer.key_buffer.data_ptr()
                        assert layer.values.data_ptr() == layer.value_buffer.data_ptr()
    assert ours.get_seq_length() == theirs.get_seq_length() == prompt + 3
    for a, b in zip(ours.layers, theirs.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_replaced_keys_are_adopted():
    """Beam search reorders the cache (new tensors): the next step must build on the reordered rows."""
    layer = PreallocatedLayer(capacity=8)
    keys, values = torch.randn(2, 3, 2, 5, 4)
    layer.update(keys, values)
    layer.reorder_cache(torch.tensor([2, 2, 0]))
    step_k, step_v = torch.randn(2, 3, 2, 1, 4)
    k, v = layer.update(step_k, step_v)
    assert torch.equal(k, torch.cat([keys[[2, 2, 0]], step_k], dim=2))
    assert torch.equal(v, torch.cat([values[[2, 2, 0]], step_v], dim=2))
    assert k.data_ptr() == layer.key_buffer.data_ptr()


def test_grows_past_its_capacity():
    layer = PreallocatedLayer(capacity=3)
    chunks = [torch.randn(2, 1, 2, 2, 4) for _ in range(3)]
    for k, v in chunks:
        keys, _ = layer.update(k, v)
    assert torch.equal(keys, torch.cat([k for k, _ in chunks], dim=2))


@pytest.mark.slow
def test_eval_generation_uses_it(tiny, padded_inputs, monkeypatch):
    model, processor = tiny
    updates = []
    original = PreallocatedLayer.update

    def counting(self, *args, **kwargs):
        updates.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreallocatedLayer, "update", counting)
    texts = generate_from_inputs(
        model, processor, padded_inputs, GenerationSettings(max_new_tokens=3, decoder="generate")
    )
    assert len(texts) == 2 and len(updates) >= 2 * layers(model)
    updates.clear()
    static = GenerationSettings(max_new_tokens=3, cache_implementation="static")
    generate.generate_from_inputs(model, processor, padded_inputs, static)
    assert not updates  # an explicit cache implementation is transformers' own
