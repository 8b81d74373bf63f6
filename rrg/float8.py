"""FP8 matmuls through torchao (optional: `pip install -r requirements-fp8.txt`).

The check whether FP8 can run comes first (both parts use it); then each part stands alone, under its own
header: training (`train_lora.py --fp8`: the frozen base linears cast to FP8 at each matmul, torchao's float8
training) and generation (`--fp8` of the eval scripts: the decoder linears quantised to FP8 once, torchao's
float8 inference). torchao is imported only when a part is used, so the rest of the package runs without it.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from .io import InputError

INSTALL_HINT = "pip install -r requirements-fp8.txt"
# FP8 tensor cores (torch._scaled_mm): Ada (L4, RTX 40xx, compute capability 8.9) and Hopper (H100/H200, 9.0).
MIN_CAPABILITY = (8, 9)
# torch._scaled_mm takes only operands whose dimensions are multiples of 16.
ALIGNMENT = 16


# --------------------------------------------------------------------------- can FP8 run here


def float8_problem(device: torch.device | str, emulate: bool = False, flag: str = "--fp8") -> str | None:
    """Why FP8 matmuls cannot run on `device` (one line, starting with the option `flag` that asked for
    them), or None when they can.

    `emulate`: torchao's emulation (FP8 rounding computed in high precision), which runs anywhere: tests.
    """
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return f"{flag} needs torchao, which is not installed: {INSTALL_HINT}"
    if emulate:
        return None
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        where = "no CUDA GPU is available" if device.type == "cuda" else f"this run is on {device}"
        return f"{flag} needs a CUDA GPU with FP8 tensor cores (H100, H200, L4, Ada); {where}"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (
            f"{flag} needs FP8 tensor cores (compute capability >= 8.9: H100, H200, L4, Ada); "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}"
        )
    return None


# --------------------------------------------------------------------------- training: frozen base linears


def frozen_base_linears(model) -> dict[str, torch.nn.Linear]:
    """The frozen base linears of the LoRA layers inside the language model's decoder layers, by name.

    Those are peft's `.base_layer` of q/k/v/o/gate/up/down_proj (with the default --target_modules):
    plain bf16 `nn.Linear`s (not 4-bit ones), frozen, with both dimensions multiples of 16. Found through
    the decoder's own layer list (as rrg.train.compile_decoder_layers does), not by matching names, so
    LoRA's A/B, lm_head, the CLIP vision tower and the projector are never among them.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    chosen: set[int] = set()
    for layer in base.get_decoder().layers:
        for name, module in layer.named_modules():
            if (
                name.rsplit(".", 1)[-1] == "base_layer"
                and type(module) is torch.nn.Linear  # exactly: bitsandbytes' Linear4bit subclasses it
                and not module.weight.requires_grad
                and module.in_features % ALIGNMENT == 0
                and module.out_features % ALIGNMENT == 0
            ):
                chosen.add(id(module))
    return {name: module for name, module in model.named_modules() if id(module) in chosen}


def convert_frozen_base_linears(model, emulate: bool = False) -> int:
    """Swap the frozen base linears of the decoder's LoRA layers (see frozen_base_linears) for torchao's
    Float8Linear with the rowwise recipe, in place; returns how many were swapped.

    Call it after peft has wrapped the model and before the decoder layers are compiled. The weights stay
    the same bf16 tensors (checkpoints and adapters do not change); each matmul casts its operands to FP8.

    Why only the frozen base: its matmuls are nearly all of a LoRA step's FLOPs (forward and input gradient
    of 7B frozen parameters for every token), and a frozen weight needs no weight gradient, whose FP8 error
    would otherwise go straight into the update. LoRA's rank-64 A/B matmuls are too small for the casts to
    pay, and the trained weights keep their bf16 gradients. lm_head runs only at the report's positions and
    gives the logits the loss is computed from; CLIP and the projector run forward once per image. All of
    those stay in bf16.

    Why rowwise: one scale per row of the activations (per token) and of the weight (per output channel),
    instead of one per tensor, so an outlier token or channel coarsens only its own row's rounding, not the
    whole matmul's: FP8 e4m3 keeps 3 mantissa bits, and the loss curve must stay within 1% of bf16's.
    torchao documents its per-tensor recipe as the fastest and rowwise as the more accurate; rowwise also
    casts gradients to e4m3 (3 mantissa bits, not e5m2's 2) and rounds scales down to powers of 2.

    Needs torch.compile afterwards (train_lora.py refuses --fp8 without --compile): run eagerly, torchao's
    backward also computes the frozen weight's gradient (a wasted matmul) and casts in separate kernels;
    compiled, the unused gradient is dropped and the casts are fused.

    `emulate`: torchao's emulation (no FP8 hardware needed, high-precision matmuls on FP8-rounded operands),
    for tests. A one-line InputError when torchao is missing or the GPU has no FP8.
    """
    device = next(model.parameters()).device
    problem = float8_problem(device, emulate)
    if problem:
        raise InputError(problem)
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name("rowwise")
    if emulate:
        config = dataclasses.replace(config, emulate=True)
    targets = {id(module) for module in frozen_base_linears(model).values()}
    if not targets:
        raise InputError(
            "--fp8: the decoder layers have no frozen LoRA base linear to convert (see --target_modules)"
        )
    convert_to_float8_training(model, module_filter_fn=lambda module, _: id(module) in targets, config=config)
    return len(targets)


# --------------------------------------------------------------------------- generation: FP8 inference

# q,k,v,o and gate,up,down of every decoder layer (also under a PeftModel's longer prefix). Not lm_head
# (the logits decide every greedy token), not CLIP or the projector (a small share of the FLOPs).
GENERATION_TARGETS = re.compile(
    r"(?:^|\.)language_model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$"
)


def is_generation_target(name: str) -> bool:
    """Whether the module called `name` is one of the decoder linears FP8 generation quantises."""
    return GENERATION_TARGETS.search(name) is not None


def fp8_generation_problem(device: torch.device) -> str | None:
    """Why FP8 generation cannot run on `device` (a sentence), or None when it can."""
    return float8_problem(device)


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
        raise InputError(f"--fp8 needs torchao ({e}): {INSTALL_HINT}") from None


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
