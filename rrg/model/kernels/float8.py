"""FP8 matmuls for training through torchao (optional: `pip install -r requirements-fp8.txt`).

`train_lora.py --fp8`: the frozen base linears of the decoder's LoRA layers cast their operands to FP8 at
each matmul (torchao's float8 training, rowwise scales). The check whether FP8 can run here comes first.
torchao is imported only when used, so the rest of the package runs without it.

FP8 generation was tried and dropped: torchao's float8 inference (decoder linears in float8 once, per-row
activation scales at each call), eager as generation runs, made 12.5 reports/s against 30.1 in bf16 on an
H200 (scripts/benchmark.py, batch 256): the per-call activation quantisation adds kernels to every decode
step, which costs more than the FP8 matmuls save. README, "Performance", lists it.

An FP8 prompt pass with bf16 decode steps (FP8 copies of the decoder weights through torchao's float8
inference, used for prompt passes only) was dropped too: 16.4 reports/s against 29.0 in bf16 on an H100,
its prompt pass 7.5 s against 4.8 s (the per-token activation quantisation, eager) and 7 GB more memory,
which shrank the batch (results/benchmark-h100.json, its fp8_prompt rows).
"""

from __future__ import annotations

import dataclasses

import torch

from rrg.io import InputError

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


def is_plain_aligned_linear(module: torch.nn.Module) -> bool:
    """Exactly an `nn.Linear` (bitsandbytes' Linear4bit subclasses it), both sizes multiples of 16."""
    return (
        type(module) is torch.nn.Linear
        and module.in_features % ALIGNMENT == 0
        and module.out_features % ALIGNMENT == 0
    )


def frozen_base_linears(model) -> dict[str, torch.nn.Linear]:
    """The frozen base linears of the LoRA layers inside the language model's decoder layers, by name.

    Those are peft's `.base_layer` of q/k/v/o/gate/up/down_proj (with the default --target_modules):
    plain bf16 `nn.Linear`s (not 4-bit ones), frozen, with both dimensions multiples of 16. Found through
    the decoder's own layer list (as rrg.train.step.compile_decoder_layers does), not by matching names, so
    LoRA's A/B, lm_head, the CLIP vision tower and the projector are never among them.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    chosen: set[int] = set()
    for layer in base.get_decoder().layers:
        for name, module in layer.named_modules():
            if (
                name.rsplit(".", 1)[-1] == "base_layer"
                and is_plain_aligned_linear(module)
                and not module.weight.requires_grad
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
