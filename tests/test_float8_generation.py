"""FP8 generation (rrg.float8, eval's --fp8): which layers are quantised, how close the logits stay, and
the refusals. torchao's float8 tensors run on the CPU with torch 2.13 (its _scaled_mm has CPU float8
kernels), but torchao refuses to quantise without an FP8 GPU: the CPU tests lift that check (and
rrg.float8's own). The same numeric test runs unpatched on a GPU of compute capability >= 8.9."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from rrg import float8, generate
from rrg.generate import GenerationSettings
from rrg.io import InputError, read_jsonl
from rrg.tiny import IMAGE_TOKEN_ID, tiny_config

PROJECTIONS = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
# fp8 against bf16 logits of the tiny random model, relative L2 error: 0.049 measured on the CPU (bf16
# against fp32: 0.007). Below 1e-3 nothing was quantised; above 0.10 the quantisation is wrong.
MAX_RELATIVE_ERROR = 0.10
MIN_RELATIVE_ERROR = 1e-3


def fp8_cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= float8.MIN_CAPABILITY


ON_FP8_GPU = pytest.mark.skipif(
    not fp8_cuda(), reason="needs a CUDA GPU with FP8 (compute capability >= 8.9)"
)


def expected_targets(config) -> set[str]:
    layers = config.text_config.num_hidden_layers
    return {f"model.language_model.layers.{i}.{p}" for i in range(layers) for p in PROJECTIONS}


def tiny_bf16(device: str = "cpu") -> LlavaForConditionalGeneration:
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(tiny_config()).to(device=device, dtype=torch.bfloat16).eval()


def tiny_inputs(device: str) -> dict:
    """Two prompts of 37 tokens: BOS, the 16 image tokens of a 56 px view, 20 random text tokens."""
    g = torch.Generator().manual_seed(1)
    ids = torch.cat(
        [
            torch.ones(2, 1, dtype=torch.long),
            torch.full((2, 16), IMAGE_TOKEN_ID),
            torch.randint(3, 32000, (2, 20), generator=g),
        ],
        dim=1,
    )
    pixels = torch.randn(2, 3, 56, 56, generator=g, dtype=torch.float32).to(torch.bfloat16)
    return {"input_ids": ids.to(device), "pixel_values": pixels.to(device)}


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=ON_FP8_GPU)])
def fp8_device(request, monkeypatch) -> str:
    """Where the FP8 model runs: the CPU with the FP8-GPU checks lifted, or an FP8 GPU as it is."""
    pytest.importorskip("torchao.quantization", reason="torchao is not installed (requirements-fp8.txt)")
    if request.param == "cpu":
        from torchao.quantization import quant_api

        if not hasattr(quant_api, "_check_hardware_support"):
            pytest.skip("this torchao has no quant_api._check_hardware_support to lift on the CPU")
        monkeypatch.setattr(quant_api, "_check_hardware_support", lambda *args, **kwargs: None)
        monkeypatch.setattr(float8, "fp8_generation_problem", lambda device: None)
    return request.param


# --------------------------------------------------------------------------- which layers


def test_targets_are_the_seven_decoder_projections_of_every_layer():
    model = tiny_bf16()
    targets = float8.generation_targets(model)
    assert set(targets) == expected_targets(model.config) and len(targets) == 2 * 7
    assert not any(("vision_tower" in n or "projector" in n or "lm_head" in n) for n in targets)
    # The same layers under a PeftModel's prefix; never their wrappers' insides or CLIP's projections.
    assert float8.is_generation_target("base_model.model.model.language_model.layers.3.mlp.down_proj")
    assert not float8.is_generation_target("model.language_model.layers.3.mlp.down_proj.base_layer")
    assert not float8.is_generation_target(
        "model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj"
    )
    assert not float8.is_generation_target("lm_head")


def test_quantizes_exactly_the_decoder_projections(fp8_device):
    model = tiny_bf16(fp8_device)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert not float8.is_quantized_for_generation(model)
    names = float8.quantize_for_generation(model)
    quantized = {n for n, m in model.named_modules() if float8.is_fp8_weight(getattr(m, "weight", None))}
    assert set(names) == quantized == expected_targets(model.config)
    assert float8.is_quantized_for_generation(model)
    for name, param in model.named_parameters():  # lm_head, CLIP, projector, norms, embeddings: untouched
        if name.removesuffix(".weight") not in quantized:
            assert type(param) is torch.nn.Parameter and torch.equal(param, before[name]), name


def test_fp8_logits_stay_close_to_bf16(fp8_device):
    reference = tiny_bf16(fp8_device)
    model = copy.deepcopy(reference)
    float8.quantize_for_generation(model)
    inputs = tiny_inputs(fp8_device)
    with torch.inference_mode():
        expected = reference(**inputs).logits.float()
        got = model(**inputs).logits.float()
    error = float((got - expected).norm() / expected.norm())
    assert MIN_RELATIVE_ERROR < error < MAX_RELATIVE_ERROR, error


def test_generation_lines_record_fp8_and_a_mismatch_is_refused(
    fp8_device, tiny_model_dir, xray_paths, tmp_path
):
    """The eval loop generates with the FP8 model, and its lines say so; settings that misstate the
    model's precision are refused before anything is written."""
    from rrg.entries import Entry
    from rrg.processor import load_processor

    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).to(fp8_device)
    processor = load_processor(tiny_model_dir)
    entries = [
        Entry(id=str(i), study_id=str(i), images=[p.name], prompt="Write the report.", response="")
        for i, p in enumerate(xray_paths[:3])
    ]
    items = [(e, e.images) for e in entries]
    paths = {p.name: p for p in xray_paths}
    settings = GenerationSettings(max_new_tokens=4, batch_size=2, fp8=True)
    identity = {"image_control": "none", "generation": {"fp8": True}, "model": "tiny", "adapter": None}
    out = tmp_path / "predictions.jsonl"
    with pytest.raises(ValueError, match="settings.fp8 is True but the model's decoder linears are bf16"):
        generate.generate_predictions(model, processor, items, paths, out, identity, settings)
    float8.quantize_for_generation(model)
    with pytest.raises(ValueError, match="settings.fp8 is False but the model's decoder linears are FP8"):
        generate.generate_predictions(model, processor, items, paths, out, identity, GenerationSettings())
    assert not out.exists()
    generate.generate_predictions(model, processor, items, paths, out, identity, settings)
    lines = read_jsonl(out)
    assert [r["id"] for r in lines] == ["0", "1", "2"] and all(r["generation"]["fp8"] for r in lines)
    assert all(isinstance(r["prediction"], str) for r in lines)


# --------------------------------------------------------------------------- refusals


def test_refuses_the_cpu():
    with pytest.raises(InputError, match=r"--fp8 needs a CUDA GPU with FP8 tensor cores .*this run is on cpu"):
        float8.require_fp8_generation(torch.device("cpu"))
    with pytest.raises(InputError, match="this run is on cpu"):
        float8.quantize_for_generation(tiny_bf16())


@pytest.mark.parametrize(
    ("capability", "refused"),
    [((7, 0), True), ((8, 0), True), ((8, 6), True), ((8, 9), False), ((9, 0), False)],
)
def test_refuses_a_gpu_without_fp8_matmuls(monkeypatch, capability, refused):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Test GPU")
    problem = float8.fp8_generation_problem(torch.device("cuda", 0))
    if refused:
        assert (
            problem.endswith(f"NVIDIA Test GPU has {capability[0]}.{capability[1]}") and ">= 8.9" in problem
        )
    else:
        assert problem is None


def test_refuses_without_torchao(monkeypatch):
    monkeypatch.setattr(float8, "fp8_generation_problem", lambda device: None)
    monkeypatch.setitem(sys.modules, "torchao", None)  # what an absent package raises on import
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(InputError, match=r"--fp8 needs torchao .*pip install -r requirements-fp8\.txt$"):
        float8.require_fp8_generation(torch.device("cuda", 0))


def test_refuses_an_unmerged_adapter_and_non_bf16_weights(monkeypatch):
    from peft import LoraConfig, get_peft_model

    monkeypatch.setattr(float8, "fp8_generation_problem", lambda device: None)
    lora = get_peft_model(tiny_bf16(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(
        InputError, match=r"language_model\.layers\.0\.self_attn\.q_proj is a peft\.tuners\.lora"
    ):
        float8.quantize_for_generation(lora)
    fp32 = LlavaForConditionalGeneration(tiny_config())
    with pytest.raises(InputError, match=r"layers\.0\.self_attn\.q_proj holds torch\.float32 weights"):
        float8.quantize_for_generation(fp32)


@ON_FP8_GPU
def test_eval_run_with_fp8_end_to_end(tiny_model_dir, xray_paths, tmp_path, capsys):
    """eval/llava.py --fp8 on the GPU: loads bf16, quantises, generates, and the lines say fp8."""
    import json

    from rrg import evaluate

    records = [{"id": str(i), "images": [p.name], "prompt": "Write the report.", "response": "Findings: x."}
               for i, p in enumerate(xray_paths[:3])]  # fmt: skip
    json_file = tmp_path / "split.json"
    json_file.write_text(json.dumps(records))
    out = tmp_path / "run" / "predictions.jsonl"
    args = ["--json_file", str(json_file), "--image_dir", str(xray_paths[0].parent), "--model_path",
            str(tiny_model_dir), "--out", str(out), "--max_new_tokens", "4", "--num_workers", "0", "--no_score"]  # fmt: skip
    evaluate.main([*args, "--fp8"])
    assert "fp8: 14 decoder linear layers in float8" in capsys.readouterr().out
    assert [r["generation"]["fp8"] for r in read_jsonl(out)] == [True] * 3
