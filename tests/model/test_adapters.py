"""LoRA adapters: this project's PEFT folders, the reference paper's layout (LM + CLIP q/k/v), merging."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import LlavaForConditionalGeneration

from rrg.io import InputError
from rrg.model.convert import VISION_PREFIX, convert_checkpoint
from rrg.model.load import load_adapter, load_base_model, load_processor
from rrg.model.merge import main as merge_main
from rrg.model.prompts import render_prompt
from tests.helpers import shared_path

RANK, ALPHA = 4, 8
# The reference adapter's targets match by suffix: every LM projection, and CLIP's q/k/v (not out_proj).
TARGET = re.compile(
    r"^(model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
    r"|" + re.escape(VISION_PREFIX) + r"encoder\.layers\.\d+\.self_attn\.[qkv]_proj)\.weight$"
)


def original_tensors(folder):
    return {k: v for shard in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(shard)).items()}


@pytest.fixture(scope="module")
def reference_adapter(tiny_original, tmp_path_factory):
    """A synthetic adapter in the reference paper's exact layout: PEFT 0.4 keys on original names, .bin."""
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, weight in original_tensors(tiny_original).items():
        if TARGET.match(key):
            module = "base_model.model." + key.removesuffix(".weight")
            out_features, in_features = weight.shape
            state[module + ".lora_A.weight"] = 0.1 * torch.randn(RANK, in_features, generator=generator)
            state[module + ".lora_B.weight"] = 0.1 * torch.randn(out_features, RANK, generator=generator)
    assert any("vision_tower" in k for k in state) and any("mlp.down_proj" in k for k in state)
    folder = tmp_path_factory.mktemp("reference_lora")
    config = json.loads(shared_path("reference_lora", "adapter_config.json").read_text())
    config.update(r=RANK, lora_alpha=ALPHA)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    torch.save(state, folder / "adapter_model.bin")
    return folder


@pytest.fixture(scope="module")
def batch(converted, xray_paths):
    processor = load_processor(str(converted))
    image = Image.open(xray_paths[0]).convert("RGB")
    return processor(text=[render_prompt("Write the report.")], images=[image], return_tensors="pt")


def logits_of(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.slow
def test_reference_adapter_equals_hand_applied_deltas(
    tiny_original, reference_adapter, converted, batch, tmp_path
):
    # By hand, in the ORIGINAL key space: W + alpha/r * B @ A, then the (separately tested) conversion.
    state = torch.load(reference_adapter / "adapter_model.bin", weights_only=True)
    merged = tmp_path / "merged_original"
    shutil.copytree(tiny_original, merged)
    changed = 0
    for shard in sorted(merged.glob("*.safetensors")):
        tensors = load_file(str(shard))
        for key in tensors:
            module = "base_model.model." + key.removesuffix(".weight")
            if module + ".lora_A.weight" in state:
                delta = state[module + ".lora_B.weight"] @ state[module + ".lora_A.weight"]
                tensors[key] = tensors[key] + ALPHA / RANK * delta
                changed += 1
        save_file(tensors, str(shard))
    assert changed == len(state) // 2
    expected = logits_of(load_base_model(str(convert_checkpoint(merged, tmp_path / "merged_hf"))), batch)

    model = load_adapter(load_base_model(str(converted)), str(reference_adapter))
    assert isinstance(model, PeftModel)
    adapted = {name for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert len(adapted) == len(state) // 2  # exactly the adapter's modules, CLIP q/k/v included
    assert "base_model.model.model.vision_tower.encoder.layers.2.self_attn.v_proj" in adapted
    base = logits_of(load_base_model(str(converted)), batch)
    assert not torch.allclose(base, expected, atol=1e-3)  # the deltas matter
    torch.testing.assert_close(logits_of(model, batch), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_reference_adapter_with_unknown_or_unused_keys_fails(converted, reference_adapter, tmp_path):
    for name, extra in [
        ("unknown", "base_model.model.model.mm_projector.1.lora_A.weight"),
        ("unused", "base_model.model.model.layers.0.self_attn.qk_proj.lora_A.weight"),
    ]:
        folder = tmp_path / name
        shutil.copytree(reference_adapter, folder)
        state = torch.load(folder / "adapter_model.bin", weights_only=True)
        state[extra] = torch.zeros(RANK, 64)
        state[extra.replace("lora_A", "lora_B")] = torch.zeros(64, RANK)
        torch.save(state, folder / "adapter_model.bin")
        with pytest.raises(InputError, match=re.escape(extra.rsplit(".lora_A", 1)[0])):
            load_adapter(load_base_model(str(converted)), str(folder))


@pytest.mark.slow
def test_project_peft_adapter_round_trip(converted, batch, tmp_path):
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"
    )
    trained = get_peft_model(load_base_model(str(converted)), config)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # as if trained: B is zero at init
    trained.eval()
    expected = logits_of(trained, batch)
    trained.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    loaded = load_adapter(load_base_model(str(converted)), str(tmp_path / "adapter"))
    torch.testing.assert_close(logits_of(loaded, batch), expected)
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = load_adapter(load_base_model(str(converted)), str(tmp_path / "adapter"), is_trainable=True)
    assert any(p.requires_grad for n, p in trainable.named_parameters() if "lora_" in n)


@pytest.mark.slow
def test_merge_lora_writes_a_standalone_model(converted, reference_adapter, batch, tmp_path):
    expected = logits_of(load_adapter(load_base_model(str(converted)), str(reference_adapter)), batch)
    out = merge_main(
        [
            "--model_path",
            str(converted),
            "--lora_path",
            str(reference_adapter),
            "--out",
            str(tmp_path / "merged"),
        ]
    )
    merged = LlavaForConditionalGeneration.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits_of(merged, batch), expected, atol=1e-5, rtol=1e-5)
    assert load_processor(str(out)).tokenizer.convert_tokens_to_ids("<image>") == 32000


@pytest.mark.slow
@pytest.mark.parametrize("change", ["every key renamed", "half the keys dropped"])
def test_project_adapter_with_wrong_keys_is_an_error_naming_them(tiny_model_dir, tmp_path, change):
    """peft alone only warns ("Found missing adapter keys") and runs with zero or partial LoRA weights."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM")
    get_peft_model(load_base_model(str(tiny_model_dir)), config).save_pretrained(tmp_path / "adapter")
    load_adapter(load_base_model(str(tiny_model_dir)), str(tmp_path / "adapter"))  # intact: loads

    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    state = load_file(str(weights))
    if change == "every key renamed":
        state = {k.replace("self_attn", "attention").replace("mlp.", "ffn."): v for k, v in state.items()}
        named = sorted(state)[0]  # a key that matches no module
    else:
        keys = sorted(state)
        named = keys[1]  # a weight the config's modules need, missing from the file
        state = {k: state[k] for k in keys[::2]}
    save_file(state, str(weights))
    with pytest.raises(InputError, match=re.escape(named)):
        load_adapter(load_base_model(str(tiny_model_dir)), str(tmp_path / "adapter"))


@pytest.mark.slow
def test_truncated_adapter_file_is_one_line_naming_it(tiny_model_dir, tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM")
    get_peft_model(load_base_model(str(tiny_model_dir)), config).save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(InputError, match=re.escape(f"{weights}: cannot read adapter weights")):
        load_adapter(load_base_model(str(tiny_model_dir)), str(tmp_path / "adapter"))
