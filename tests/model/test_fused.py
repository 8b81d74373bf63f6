"""rrg.model.kernels.fused: Liger's kernels bound to a loaded model's decoder norms and MLPs.

On the CPU, Liger's functional module is replaced by a stand-in that does transformers' own arithmetic
and counts its calls: the binding (which modules, what they compute, that they are put back) is what is
tested there. The kernels themselves run in the GPU test, against the plain path."""

from __future__ import annotations

import sys
import types
from importlib.util import find_spec

import pytest
import torch

from rrg.io import InputError
from rrg.model.kernels import fused
from rrg.model.processor import load_processor
from tests.helpers import PER_IMAGE


@pytest.fixture(scope="module")
def tiny_llava(tiny_model_dir):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompts(tiny_model_dir, xray_paths):
    from PIL import Image

    from rrg.generate.batch import encode_batch

    views = [[Image.open(p).convert("RGB")] for p in xray_paths[:2]]
    questions = ["Describe.", "Write the full report."]
    return encode_batch(load_processor(tiny_model_dir), questions, views, per_image=PER_IMAGE)


@pytest.fixture
def stand_in_liger(monkeypatch):
    """liger_kernel's functional module as transformers' Mistral arithmetic, counting calls."""
    calls = {"rms_norm": 0, "swiglu": 0}

    def liger_rms_norm(x, weight, eps, offset, casting_mode, in_place):
        assert (offset, casting_mode, in_place) == (0.0, "llama", False)
        calls["rms_norm"] += 1
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h.to(x.dtype)

    def liger_swiglu(a, b):
        calls["swiglu"] += 1
        return torch.nn.functional.silu(a) * b

    module = types.ModuleType("liger_kernel.transformers.functional")
    module.liger_rms_norm, module.liger_swiglu = liger_rms_norm, liger_swiglu
    for name in ("liger_kernel", "liger_kernel.transformers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", module)
    monkeypatch.setattr(fused, "liger_problem", lambda device: None)  # the stand-in runs on the CPU
    return calls


@pytest.mark.slow
def test_every_decoder_norm_and_mlp_runs_the_kernels_with_the_same_result(
    tiny_llava, prompts, stand_in_liger
):
    layers = tiny_llava.config.text_config.num_hidden_layers
    with torch.no_grad():
        plain = tiny_llava(**prompts).logits
        with fused.liger_kernels(tiny_llava) as bound:
            fused_logits = tiny_llava(**prompts).logits
    assert bound == 3 * layers + 1
    # Two norms a layer and the final one, one MLP a layer: all of them, once each.
    assert stand_in_liger == {"rms_norm": 2 * layers + 1, "swiglu": layers}
    torch.testing.assert_close(fused_logits, plain, rtol=0, atol=0)


@pytest.mark.slow
def test_decode_steps_keep_transformers_kernels(tiny_llava, prompts, stand_in_liger):
    """One position per sequence (a decode step after the prompt pass) runs the modules' own forwards."""
    with torch.no_grad(), fused.liger_kernels(tiny_llava):
        out = tiny_llava(**prompts, use_cache=True)
        prompt_calls = dict(stand_in_liger)
        token = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([prompts["attention_mask"], prompts["attention_mask"].new_ones(2, 1)], dim=1)
        tiny_llava(input_ids=token, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
    assert prompt_calls["swiglu"] > 0 and stand_in_liger == prompt_calls


@pytest.mark.slow
def test_the_modules_own_forwards_are_back_after_the_block_and_after_an_exception(
    tiny_llava, prompts, stand_in_liger
):
    with fused.liger_kernels(tiny_llava):
        pass
    with pytest.raises(RuntimeError, match="inside"), fused.liger_kernels(tiny_llava):
        raise RuntimeError("inside")
    with torch.no_grad():
        tiny_llava(**prompts)
    assert stand_in_liger == {"rms_norm": 0, "swiglu": 0}
    assert not any("forward" in m.__dict__ for m in tiny_llava.modules())


@pytest.mark.slow
def test_a_decoder_of_another_shape_or_a_wrapped_forward_is_refused(tiny_llava, stand_in_liger, monkeypatch):
    monkeypatch.setattr(tiny_llava.config.text_config, "hidden_act", "gelu")
    with (
        pytest.raises(InputError, match="activation is 'gelu'; Liger's SwiGLU needs silu"),
        fused.liger_kernels(tiny_llava),
    ):
        pass
    monkeypatch.setattr(tiny_llava.config.text_config, "hidden_act", "silu")
    mlp = tiny_llava.get_decoder().layers[0].mlp
    monkeypatch.setitem(mlp.__dict__, "forward", mlp.forward)  # as accelerate's offloading hook does
    with pytest.raises(InputError, match="already have wrapped forwards"), fused.liger_kernels(tiny_llava):
        pass
    assert stand_in_liger == {"rms_norm": 0, "swiglu": 0}


@pytest.mark.slow
def test_generation_with_liger_true_runs_the_kernels_and_only_then(
    tiny_model_dir, tiny_llava, prompts, stand_in_liger
):
    """rrg.generate.batch binds the kernels for a call whose settings say liger=True (what its lines record), and
    for no other; the modules are plain again afterwards."""
    from rrg.generate.batch import GenerationSettings, generate_from_inputs

    processor = load_processor(tiny_model_dir)
    plain = generate_from_inputs(tiny_llava, processor, prompts, GenerationSettings(max_new_tokens=3))
    assert stand_in_liger == {"rms_norm": 0, "swiglu": 0}
    fused_texts = generate_from_inputs(
        tiny_llava, processor, prompts, GenerationSettings(max_new_tokens=3, liger=True)
    )
    layers = tiny_llava.config.text_config.num_hidden_layers
    assert stand_in_liger == {"rms_norm": 2 * layers + 1, "swiglu": layers}  # the prompt pass only
    assert fused_texts == plain  # the stand-in does transformers' arithmetic
    assert not any("forward" in m.__dict__ for m in tiny_llava.modules())
    with pytest.raises(InputError, match="--liger with --cache_implementation static is not supported"):
        GenerationSettings(liger=True, cache_implementation="static")  # compiled decode steps: not tried


@pytest.mark.slow
def test_an_unmerged_lora_adapter_is_part_of_the_fused_mlp(tiny_model_dir, prompts, stand_in_liger):
    """With --load_in_4bit the adapter stays unmerged: gate/up/down are peft LoRA layers, and their updates
    reach the fused MLP's output."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    base = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(**prompts).logits
    config = LoraConfig(
        r=4, target_modules=r".*language_model.*\.(gate_proj|up_proj|down_proj)", init_lora_weights=False
    )
    model = get_peft_model(base, config).eval()
    with torch.no_grad():
        plain = model(**prompts).logits
        with fused.liger_kernels(model):
            fused_logits = model(**prompts).logits
    assert stand_in_liger["swiglu"] == model.config.text_config.num_hidden_layers
    assert not torch.allclose(plain, before)  # the adapter changes the output...
    torch.testing.assert_close(fused_logits, plain, rtol=0, atol=0)  # ...and the fused path keeps it


@pytest.mark.slow
def test_a_norm_or_mlp_of_another_kind_is_refused(tiny_model_dir, stand_in_liger, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    decoder = model.get_decoder()
    monkeypatch.setattr(decoder.layers[1], "mlp", torch.nn.Identity())
    with (
        pytest.raises(InputError, match="--liger: Identity is not a gate/up/down MLP"),
        fused.liger_kernels(model),
    ):
        pass
    monkeypatch.setattr(decoder, "norm", torch.nn.LayerNorm(decoder.config.hidden_size))
    with (
        pytest.raises(InputError, match="--liger: LayerNorm is not an RMSNorm with a weight"),
        fused.liger_kernels(model),
    ):
        pass


def test_missing_liger_or_a_cpu_run_is_named_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # import fails
    assert fused.liger_problem("cuda") == (
        "--liger needs liger-kernel, which is not installed: pip install -r requirements-liger.txt"
    )
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(
        sys.modules, "liger_kernel.transformers", types.ModuleType("liger_kernel.transformers")
    )
    monkeypatch.setitem(
        sys.modules,
        "liger_kernel.transformers.functional",
        types.ModuleType("liger_kernel.transformers.functional"),
    )
    cuda_message = "--liger needs a CUDA GPU (Liger's kernels are Triton); "
    assert fused.liger_problem("cpu") == cuda_message + "this run is on cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fused.liger_problem("cuda:0") == cuda_message + "no CUDA GPU is available"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(fused, "_kernel_failure", lambda index: "RuntimeError: Failed to find C compiler")
    assert fused.liger_problem("cuda:0") == (
        "--liger: Liger's kernels fail on this GPU (RuntimeError: Failed to find C compiler)"
    )
    monkeypatch.setattr(fused, "_kernel_failure", lambda index: None)
    assert fused.liger_problem("cuda:0") is None


needs_liger_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or find_spec("liger_kernel") is None,
    reason="Liger's Triton kernels need a CUDA GPU and liger-kernel (requirements-liger.txt)",
)


@pytest.mark.slow
@needs_liger_gpu
def test_liger_kernels_on_the_gpu_match_the_plain_path(tiny_model_dir, prompts):
    """The real kernels, bf16 on a GPU: prompt-pass logits within 1% of the plain path's largest logit, the
    same first greedy token (later ones may flip on near-ties: other rounding), and liger_problem's probe
    kernel passes."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda().eval()
    inputs = {k: v.cuda() for k, v in prompts.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    greedy = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        plain = model(**inputs).logits.float()
        plain_tokens = model.generate(**inputs, **greedy)
        with fused.liger_kernels(model):
            fused_logits = model(**inputs).logits.float()
            fused_tokens = model.generate(**inputs, **greedy)
    assert (fused_logits - plain).abs().max() <= 0.01 * plain.abs().max()
    new = prompts["input_ids"].shape[1]
    assert torch.equal(fused_tokens[:, new], plain_tokens[:, new])
    assert fused.liger_problem("cuda") is None
