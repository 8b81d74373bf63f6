"""Original LLaVA-Med checkpoint -> HF Llava: key mapping on the real index, and logits of a tiny
converted checkpoint against an independent forward pass over the original tensors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModel, MistralConfig, MistralForCausalLM

from rrg.io import InputError
from rrg.model.config import IMAGE_TOKEN_ID, llava_med_config
from rrg.model.convert import VISION_PREFIX, convert_checkpoint, expected_hf_keys, map_original_keys
from rrg.model.load import load_base_model, load_processor, resolve_model_path
from rrg.model.prompts import render_prompt
from tests.helpers import shared_path

REAL = "llava-med-v1.5-mistral-7b"


def test_real_index_maps_onto_llava_state_dict():
    weight_map = json.loads(shared_path(REAL, "model.safetensors.index.json").read_text())["weight_map"]
    assert len(weight_map) == 686
    mapping = map_original_keys(weight_map)  # raises on an unmapped key or a collision
    assert len(set(mapping.values())) == 686
    assert set(mapping.values()) == expected_hf_keys(llava_med_config())
    assert mapping["model.mm_projector.2.bias"] == "model.multi_modal_projector.linear_2.bias"
    assert (
        mapping[VISION_PREFIX + "encoder.layers.23.self_attn.q_proj.weight"]
        == "model.vision_tower.encoder.layers.23.self_attn.q_proj.weight"
    )
    assert sum(k.startswith(VISION_PREFIX) for k in weight_map) == 391


def test_unknown_tensor_name_is_an_error():
    with pytest.raises(InputError, match="model.mm_projector.1.weight"):
        map_original_keys(["model.layers.0.mlp.up_proj.weight", "model.mm_projector.1.weight"])


def edited_copy(src, dst, edit_index):
    shutil.copytree(src, dst)
    index_path = dst / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    edit_index(index["weight_map"])
    index_path.write_text(json.dumps(index))
    return dst


@pytest.mark.slow
def test_missing_or_extra_tensor_is_an_error(tiny_original, tmp_path):
    missing = edited_copy(tiny_original, tmp_path / "missing", lambda m: m.pop("model.norm.weight"))
    with pytest.raises(InputError, match="model.language_model.norm.weight"):
        convert_checkpoint(missing, tmp_path / "out1")
    extra = edited_copy(
        tiny_original, tmp_path / "extra", lambda m: m.update({"model.extra.weight": m["lm_head.weight"]})
    )
    with pytest.raises(InputError, match="model.extra.weight"):
        convert_checkpoint(extra, tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_converted_folder_layout(converted):
    index = json.loads((converted / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "llava"
    assert config["text_config"]["vocab_size"] == 32001
    assert config["vision_feature_layer"] == -2 and config["projector_hidden_act"] == "gelu"
    assert config["vision_config"]["hidden_size"] == 128 and config["vision_config"]["image_size"] == 56
    processor = load_processor(str(converted))
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == IMAGE_TOKEN_ID


def reference_logits(original_dir, input_ids, pixel_values):
    """LLaVA's forward written out from the original tensors: CLIP layer -2 without CLS ->
    Linear-GELU-Linear -> spliced in place of `<image>` -> Mistral."""
    tensors = {}
    for shard in sorted(original_dir.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    original = json.loads((original_dir / "config.json").read_text())
    mistral = MistralForCausalLM(
        MistralConfig(
            vocab_size=32000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=original["rope_theta"],
            rms_norm_eps=original["rms_norm_eps"],
            sliding_window=None,
            tie_word_embeddings=False,
        )
    ).eval()
    mistral.load_state_dict(
        {k: v for k, v in tensors.items() if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    )
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
    ).eval()
    clip.load_state_dict(
        {k.removeprefix(VISION_PREFIX): v for k, v in tensors.items() if k.startswith(VISION_PREFIX)}
    )
    with torch.no_grad():
        features = clip(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        hidden = F.linear(
            features, tensors["model.mm_projector.0.weight"], tensors["model.mm_projector.0.bias"]
        )
        projected = F.linear(
            F.gelu(hidden), tensors["model.mm_projector.2.weight"], tensors["model.mm_projector.2.bias"]
        )
        is_image = input_ids == IMAGE_TOKEN_ID
        embeds = tensors["model.embed_tokens.weight"][input_ids.masked_fill(is_image, 0)]
        embeds[is_image] = projected.reshape(-1, projected.shape[-1])
        return mistral(inputs_embeds=embeds).logits


@pytest.mark.slow
def test_converted_logits_equal_original_forward(tiny_original, converted, xray_paths):
    processor = load_processor(str(converted))
    images = [Image.open(p).convert("RGB") for p in xray_paths[:2]]
    batch = processor(
        text=[render_prompt("Describe the X-ray.", n_images=2)], images=images, return_tensors="pt"
    )
    assert int((batch["input_ids"] == IMAGE_TOKEN_ID).sum()) == 2 * 16
    model = load_base_model(str(converted))
    assert model.dtype == torch.float32
    with torch.no_grad():
        logits = model(**batch).logits
    expected = reference_logits(tiny_original, batch["input_ids"], batch["pixel_values"])
    torch.testing.assert_close(logits[..., :IMAGE_TOKEN_ID], expected, atol=1e-5, rtol=1e-5)
    assert torch.all(logits[..., IMAGE_TOKEN_ID] == 0)  # the appended `<image>` output row is zero


@pytest.mark.slow
def test_resolve_model_path_converts_once(tiny_original, converted, tmp_path, monkeypatch):
    assert resolve_model_path(str(converted)) == str(converted)  # HF Llava folder: as is
    first = resolve_model_path(str(tiny_original), cache_dir=str(tmp_path))
    assert (tmp_path / first.split("/")[-1] / "model.safetensors.index.json").exists()

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr("rrg.model.load.convert_checkpoint", no_second_conversion)
    assert resolve_model_path(str(tiny_original), cache_dir=str(tmp_path)) == first
    monkeypatch.setenv("RRG_CACHE", str(tmp_path))
    assert resolve_model_path(str(tiny_original)) == first


def test_unknown_model_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        resolve_model_path(str(tmp_path / "no-such-model"))
