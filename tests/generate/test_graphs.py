"""rrg.generate.graphs: greedy decoding over preallocated buffers, its steps replayed as CUDA graphs on a GPU.

On the CPU the same steps run eagerly: with one-position buckets attention reads exactly what generate()
reads, so the tokens must be generate()'s, bit for bit; with the default buckets the reads are longer
(masked), and the tokens still agree on the tiny model.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlavaForConditionalGeneration

from rrg.generate.batch import GenerationSettings, encode_batch, generate_batch, load_image
from rrg.generate.graphs import GreedyDecoder, GreedyRules
from rrg.io import InputError
from rrg.model.processor import load_processor, tokens_per_image
from rrg.model.tiny import generation_config

QUESTIONS = ["Describe.", "You are a radiologist. Write the full report with Findings and Impression.", "Hi"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    return model, load_processor(tiny_model_dir)


def batch(tiny, xray_paths, questions=QUESTIONS):
    model, processor = tiny
    views = [[load_image(p)] for p in xray_paths[: len(questions)]]
    return encode_batch(processor, questions, views, tokens_per_image(model.config))


def reference_tokens(model, processor, inputs, max_new_tokens: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id
        )
    return out[:, inputs["input_ids"].shape[1] :]


def rules(model, processor) -> GreedyRules:
    return GreedyRules.from_config(model.generation_config, processor.tokenizer.pad_token_id)


@pytest.mark.slow
def test_exact_reads_give_generates_tokens_and_cache_bit_for_bit(tiny, xray_paths):
    model, processor = tiny
    inputs = batch(tiny, xray_paths)
    mask = inputs["attention_mask"].bool()
    assert not mask[:, 0].all()  # left padding really is exercised
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=12, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
            return_dict_in_generate=True,
        )  # fmt: skip
    decoder = GreedyDecoder(model, bucket=1)
    got = decoder.generate(inputs, 12, rules(model, processor))
    assert torch.equal(got, out.sequences[:, inputs["input_ids"].shape[1] :])
    # Every key and value each sequence holds (its own positions: rotary, masks and writes) is generate()'s.
    length = out.past_key_values.get_seq_length()
    held = torch.cat([mask, torch.ones(len(mask), length - mask.shape[1], dtype=torch.bool)], dim=1)
    for ours, theirs in zip(decoder.keys + decoder.values, [*(lay.keys for lay in out.past_key_values.layers),
                                                          *(lay.values for lay in out.past_key_values.layers)]):
        ours = ours[:, :, :length].transpose(1, 2)[held]
        assert torch.equal(ours, theirs.transpose(1, 2)[held])


@pytest.mark.slow
def test_bucketed_reads_agree_and_buffers_serve_several_batches(tiny, xray_paths):
    model, processor = tiny
    decoder = GreedyDecoder(model, bucket=8, check_every=3)
    for questions in (QUESTIONS, QUESTIONS[:2], ["Report the findings of this chest film in detail."]):
        inputs = batch(tiny, xray_paths, questions)
        expected = reference_tokens(model, processor, inputs, 10)
        assert torch.equal(decoder.generate(inputs, 10, rules(model, processor)), expected)
    assert decoder.capacity % 8 == 0 and decoder.max_batch == 3  # one set of buffers, grown once


@pytest.mark.slow
def test_finished_sequences_get_padding_and_decoding_stops(tiny, xray_paths, monkeypatch):
    model, processor = tiny
    inputs = batch(tiny, xray_paths)
    expected = reference_tokens(model, processor, inputs, 6)
    # Make the second token of the first sequence its end: from then on it must be padding, as in generate().
    stop = int(expected[0, 1])
    config = GenerationConfig(**{**generation_config().to_dict(), "eos_token_id": [2, stop]})
    monkeypatch.setattr(model, "generation_config", config)
    expected = reference_tokens(model, processor, inputs, 6)
    got = GreedyDecoder(model, bucket=1, check_every=1).generate(inputs, 6, rules(model, processor))
    assert torch.equal(got, expected[:, : got.shape[1]])
    assert (got[0, 2:] == processor.tokenizer.pad_token_id).all()


@pytest.mark.slow
def test_min_new_tokens_and_suppressed_tokens_are_applied(tiny, xray_paths, monkeypatch):
    model, processor = tiny
    inputs = batch(tiny, xray_paths)
    first = reference_tokens(model, processor, inputs, 1)[:, 0]
    # Suppressing each sequence's first choice changes it, in both loops alike.
    config = GenerationConfig(**{**generation_config().to_dict(), "suppress_tokens": [32000, *first.tolist()]})
    monkeypatch.setattr(model, "generation_config", config)
    expected = reference_tokens(model, processor, inputs, 5)
    got = GreedyDecoder(model, bucket=4).generate(inputs, 5, rules(model, processor))
    assert torch.equal(got, expected)
    assert not (got[:, 0] == first).any()


@pytest.mark.slow
def test_unsupported_generation_settings_are_refused(tiny):
    model, _ = tiny
    config = GenerationConfig(**{**generation_config().to_dict(), "repetition_penalty": 1.3})
    with pytest.raises(InputError, match="repetition_penalty=1.3.*--decoder generate"):
        GreedyRules.from_config(config, 0)


def test_settings_pick_the_decoder_and_refuse_graphs_where_they_do_not_apply():
    assert GenerationSettings().decoder == "graphs"
    assert GenerationSettings(num_beams=3).decoder == "generate"
    assert GenerationSettings(do_sample=True).decoder == "generate"
    with pytest.raises(InputError, match="--decoder graphs decodes greedily"):
        GenerationSettings(num_beams=3, decoder="graphs")
    with pytest.raises(InputError, match="--decoder must be"):
        GenerationSettings(decoder="fast")


@pytest.mark.slow
def test_generate_batch_with_graphs_equals_generate(tiny, xray_paths):
    model, processor = tiny
    studies = [[p] for p in xray_paths[:3]]
    ours = generate_batch(model, processor, QUESTIONS, studies, GenerationSettings(max_new_tokens=8, batch_size=2))
    theirs = generate_batch(
        model, processor, QUESTIONS, studies, GenerationSettings(max_new_tokens=8, batch_size=2, decoder="generate")
    )
    assert ours == theirs


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graph_replays_equal_eager_steps_on_the_gpu(tiny_model_dir, xray_paths):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda().eval()
    processor = load_processor(tiny_model_dir)
    inputs = batch((model, processor), xray_paths).to("cuda")
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    r = rules(model, processor)
    graphs = GreedyDecoder(model, bucket=4, use_graphs=True)
    eager = GreedyDecoder(model, bucket=4, use_graphs=False)
    assert torch.equal(graphs.generate(inputs, 20, r), eager.generate(inputs, 20, r))
    assert graphs.batches[3].graphs  # steps really were captured


@pytest.mark.slow
def test_nothing_of_a_generation_outlives_it_without_the_garbage_collector(tiny, xray_paths):
    """No reference cycle: a cache and its layers (views of tens of GiB of buffers on a GPU) are freed by
    reference counting when a generation returns, not whenever the garbage collector next runs."""
    import gc

    from rrg.generate.graphs import GraphCache, GraphLayer

    model, processor = tiny
    inputs = batch(tiny, xray_paths)
    gc.collect()
    gc.disable()
    try:
        decoder = GreedyDecoder(model, bucket=4)
        decoder.generate(inputs, 3, rules(model, processor))
        decoder.release()
        alive = [o for o in gc.get_objects() if isinstance(o, (GraphCache, GraphLayer))]
    finally:
        gc.enable()
    assert alive == []
