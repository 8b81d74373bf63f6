"""FP8 matmuls through torchao (an optional dependency: requirements-fp8.txt).

Generation (`--fp8` of the eval scripts): quantize_for_generation() puts the Mistral decoder layers'
seven linear layers of a loaded, merged Llava model into float8 once (e4m3, one scale per output row);
their inputs are quantised the same way (one scale per token) at every call, so each of those matmuls
runs on the GPU's FP8 tensor cores. lm_head, the CLIP vision tower and the projector stay bf16. The
arithmetic changes, so the generated texts differ from bf16 greedy ones: scripts/benchmark.py measures
how often (its `agreement`), and every prediction line records the setting (GenerationSettings.fp8).
"""

from __future__ import annotations

import re

import torch

from .io import InputError

FP8_INSTALL = "pip install -r requirements-fp8.txt"


# --------------------------------------------------------------------------- generation: FP8 inference

# q,k,v,o and gate,up,down of every decoder layer (also under a PeftModel's longer prefix). Not lm_head
# (the logits decide every greedy token), not CLIP or the projector (a small share of the FLOPs).
GENERATION_TARGETS = re.compile(
    r"(?:^|\.)language_model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$"
)
# FP8 tensor cores: Ada (8.9), Hopper (9.0) and newer.
MIN_FP8_CAPABILITY = (8, 9)


def is_generation_target(name: str) -> bool:
    """Whether the module called `name` is one of the decoder linears FP8 generation quantises."""
    return GENERATION_TARGETS.search(name) is not None


def fp8_generation_problem(device: torch.device) -> str | None:
    """Why FP8 generation cannot run on `device` (a sentence), or None when it can."""
    if device.type != "cuda":
        return f"--fp8 needs a CUDA GPU with FP8 matmuls (compute capability >= 8.9), not {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return (
            f"--fp8 needs a GPU with FP8 matmuls (compute capability >= 8.9: Ada, Hopper or newer); "
            f"{name} has {capability[0]}.{capability[1]}"
        )
    return None


def require_fp8_generation(device: torch.device) -> None:
    """Raise an InputError (one line) unless FP8 generation can run on `device` with torchao installed."""
    problem = fp8_generation_problem(device)
    if problem:
        raise InputError(problem)
    try:
        # The names used below: an older torchao without them fails here too ("cannot import name").
        from torchao.quantization import (  # noqa: F401
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except ImportError as e:
        raise InputError(f"--fp8 needs torchao ({e}): {FP8_INSTALL}") from None


def generation_targets(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The decoder linears to quantise, by name; anything else under those names is an InputError.

    An unmerged LoRA layer (peft's wrapper) or a bitsandbytes 4-bit layer sits where a plain bf16
    linear should: quantising its base weight would leave the adapter in bf16, or have no bf16 weight.
    """
    targets = {}
    for name, module in model.named_modules():
        if not is_generation_target(name):
            continue
        if type(module) is not torch.nn.Linear:
            raise InputError(
                f"--fp8: {name} is a {type(module).__module__}.{type(module).__name__}, not a plain linear "
                "layer: FP8 needs a merged adapter and bf16 weights (not --load_in_4bit)"
            )
        if module.weight.dtype != torch.bfloat16:
            raise InputError(f"--fp8: {name} holds {module.weight.dtype} weights; FP8 quantises bf16 ones")
        targets[name] = module
    if not targets:
        raise InputError("--fp8: the model has no language_model.layers.N projections to quantise")
    return targets


def is_fp8_weight(weight: torch.Tensor) -> bool:
    """Whether a weight is one of torchao's quantised tensors (checked without importing torchao)."""
    return type(weight).__module__.split(".")[0] == "torchao"


def is_quantized_for_generation(model: torch.nn.Module) -> bool:
    """Whether quantize_for_generation() has been applied to `model` (any decoder linear in FP8)."""
    return any(
        is_generation_target(name) and is_fp8_weight(getattr(module, "weight", None))
        for name, module in model.named_modules()
    )


def quantize_for_generation(model: torch.nn.Module) -> list[str]:
    """Quantise the decoder linears of a loaded (and merged) Llava model in place for FP8 inference.

    Weights: float8 e4m3 once, one scale per output row. Activations: quantised per row (token) at each
    call. Returns the names of the quantised layers. Inference only: the weights no longer train.
    """
    targets = generation_targets(model)
    require_fp8_generation(model.get_input_embeddings().weight.device)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    # set_inductor_config=False: torchao would otherwise change torch._inductor's global settings, which
    # every later torch.compile in the process (a training phase of the benchmark) would inherit.
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    quantize_(model, config, filter_fn=lambda module, name: name in targets)
    # torchao leaves a layer in bf16, silently, when a size is not a multiple of 16 (_scaled_mm's rule).
    skipped = [name for name, module in targets.items() if not is_fp8_weight(module.weight)]
    if skipped:
        shape = tuple(targets[skipped[0]].weight.shape)
        raise InputError(
            f"--fp8: torchao left {len(skipped)} layer(s) unquantised, e.g. {skipped[0]} of shape {shape} "
            "(FP8 matmuls need both sizes to be multiples of 16)"
        )
    return sorted(targets)
