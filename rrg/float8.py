"""FP8 matmuls for training through torchao (optional: `pip install -r requirements-fp8.txt`).

`train_lora.py --fp8`: the frozen base linears of the decoder's LoRA layers cast their operands to FP8 at
each matmul (torchao's float8 training, rowwise scales). The check whether FP8 can run here comes first.
torchao is imported only when used, so the rest of the package runs without it.

FP8 generation was tried and dropped: torchao's float8 inference (decoder linears in float8 once, per-row
activation scales at each call), eager as generation runs, made 12.5 reports/s against 30.1 in bf16 on an
H200 (scripts/benchmark.py, batch 256): the per-call activation quantisation adds kernels to every decode
step, which costs more than the FP8 matmuls save. README, "Performance", lists it.

What is left of it, as an experiment of scripts/benchmark.py (`--gen_configs 256+fp8prompt`), not an eval
flag until it is measured: `float8_prompt_pass`, FP8 for the prompt pass alone (576 image tokens a report,
near the bf16 matmul peak: ~5 of a batch's ~8 s), decode steps in bf16 as before.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator

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
    the decoder's own layer list (as rrg.train.compile_decoder_layers does), not by matching names, so
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


# --------------------------------------------------------------------------- generation: the prompt pass


def decoder_linears(model) -> dict[str, torch.nn.Linear]:
    """The plain bf16 linears of the language model's decoder layers (q/k/v/o/gate/up/down_proj), by name:
    exactly `nn.Linear`, both dimensions multiples of 16. lm_head, CLIP and the projector are not in the
    decoder layers. A model with unmerged LoRA layers is refused (their rank-64 A/B would be found)."""
    if hasattr(model, "peft_config"):
        raise InputError("the FP8 prompt pass needs a merged model (merge_and_unload), not a PeftModel")
    chosen: set[int] = set()
    for layer in model.get_decoder().layers:
        chosen.update(id(module) for module in layer.modules() if is_plain_aligned_linear(module))
    return {name: module for name, module in model.named_modules() if id(module) in chosen}


class PromptPassFloat8(torch.nn.Module):
    """A decoder linear for generation: inputs of several positions per sequence (the prompt pass) go
    through `fp8`, an FP8 copy of the weight quantised by torchao's float8 inference; single-position
    inputs (decode steps) through the untouched bf16 `linear`."""

    def __init__(self, linear: torch.nn.Linear, fp8: torch.nn.Module):
        super().__init__()
        self.linear, self.fp8 = linear, fp8

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() >= 2 and input.shape[-2] == 1:  # one new position per sequence: a decode step
            return self.linear(input)
        output = self.fp8(input)
        # An all-zero row (a padding position whose embedding is zero) has scale 0 in torchao's per-token
        # quantisation, which gives NaN; attention would spread it to every position of the sequence
        # (0 x NaN). Its exact output is the bias alone.
        zero = input.abs().amax(dim=-1, keepdim=True) == 0
        bias = self.linear.bias if self.linear.bias is not None else output.new_zeros(())
        return torch.where(zero, bias.to(output.dtype), output)


def _swap(model, name: str, module: torch.nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attribute, module)


@contextlib.contextmanager
def float8_prompt_pass(model, emulate: bool = False) -> Iterator[int]:
    """Inside: the decoder linears (see decoder_linears) run prompt passes in FP8 and decode steps in bf16;
    yields how many were swapped. On exit the original `nn.Linear`s are back, untouched.

    The FP8 copies are torchao's float8 inference (`Float8DynamicActivationFloat8WeightConfig`, the path
    that ran eagerly on an H200 when all of generation was FP8): weights in e4m3 once, one scale per
    output channel; activations quantised per token at each call. They take 1 byte a weight beside the
    bf16 ones (~7 GB for the 7B), for as long as the context lasts. torchao's float8 *training* linears
    (`--fp8` of train_lora.py) do not run eagerly with rowwise scales, hence the copies.

    `emulate`: skip this module's FP8-hardware check, for tests on the CPU, where torch's _scaled_mm has
    float8 kernels; the tests also lift torchao's own check (quant_api._check_hardware_support), which
    refuses to quantise without an FP8 GPU. A one-line InputError when torchao is missing or the GPU
    has no FP8.
    """
    problem = float8_problem(next(model.parameters()).device, emulate, flag="the FP8 prompt pass")
    if problem:
        raise InputError(problem)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    # set_inductor_config=False: torchao would otherwise change torch._inductor's global settings, which
    # every later torch.compile in the process would inherit.
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    originals = decoder_linears(model)
    try:
        for name, linear in originals.items():
            fp8 = copy.deepcopy(linear)
            quantize_(fp8, config)
            _swap(model, name, PromptPassFloat8(linear, fp8))
        yield len(originals)
    finally:
        for name, linear in originals.items():
            _swap(model, name, linear)
