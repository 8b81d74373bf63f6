"""Liger's Triton kernels for the decoder's RMSNorm and SwiGLU MLP during generation (optional:
`pip install -r requirements-liger.txt`; CUDA only).

Why: an eager prompt pass of 256 reports spends 1.55 of its 4.85 s of GPU time in elementwise kernels on
an H100 (`scripts/benchmark.py --phases gen_diagnose`): each RMSNorm casts to fp32, squares, averages,
multiplies and casts back, and the MLP runs SiLU, then a product, each a separate pass over ~157k
positions x 4,096 (or 14,336) values. Liger (linkedin/Liger-Kernel) does a norm, or SiLU-times-up, in one
Triton kernel. Its RMSNorm's "llama" casting is transformers' Mistral one (fp32 statistics, cast back to
bf16, then the weight); the sums run in another order, so logits can differ in the last bf16 bit.

Prompt passes only: a decode step (one position per sequence) keeps transformers' kernels. There the
tensors are small and a step waits on the host, which launches a Triton kernel more slowly than an aten
one: with Liger in decode steps too, a step took 41.8 ms against 29.1 (H100, batch 256), and the whole
run was slower (28.0 against 29.7 reports/s) despite the faster prompt pass (4.31 against 4.96 s). In prompt
passes only (two runs): 4.29-4.31 s against 4.89-4.92 s a batch, and the run's rate +1% to +23%, within
the spread of decode steps between configurations (29-40 ms): opt-in (eval --liger), not the default.

Bound to the modules of one loaded model for the length of a `with` block, through each module's own
`forward`: Liger's `apply_liger_kernel_to_*` would also replace transformers' classes for the whole
process. liger_kernel is imported only here, so the rest of the package runs without it.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator

import torch

from rrg.io import InputError

INSTALL_HINT = "pip install -r requirements-liger.txt"


def liger_problem(device: torch.device | str, flag: str = "--liger") -> str | None:
    """Why Liger's kernels cannot run on `device` (one line, starting with `flag`), or None when they can.
    On a GPU, one tiny kernel runs once per process and device: Triton compiles at the first launch, so a
    missing compiler or a broken install is found here, not after a 7B model has loaded."""
    try:
        import liger_kernel.transformers.functional  # noqa: F401
    except ImportError:
        return f"{flag} needs liger-kernel, which is not installed: {INSTALL_HINT}"
    except Exception as e:  # a release that does not import beside this transformers or torch
        return f"{flag}: liger-kernel does not import here ({type(e).__name__}: {_first_line(e)})"
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        where = f"this run is on {device}" if device.type != "cuda" else "no CUDA GPU is available"
        return f"{flag} needs a CUDA GPU (Liger's kernels are Triton); {where}"
    failure = _kernel_failure(device.index if device.index is not None else torch.cuda.current_device())
    return f"{flag}: Liger's kernels fail on this GPU ({failure})" if failure else None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


@functools.cache
def _kernel_failure(index: int) -> str | None:
    from liger_kernel.transformers.functional import liger_rms_norm, liger_swiglu

    try:
        x = torch.ones(1, 2, 16, device=f"cuda:{index}", dtype=torch.bfloat16)
        liger_swiglu(x, liger_rms_norm(x, x[0, 0], 1e-6, 0.0, "llama", False))
        torch.cuda.synchronize(index)
    except Exception as e:  # no C compiler for Triton's launcher, an unsupported GPU, ...
        return f"{type(e).__name__}: {_first_line(e)}"
    return None


def fused_modules(model) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """The decoder's RMSNorms (two per layer and the final one) and its SwiGLU MLPs. A decoder of another
    shape (another norm, another activation) is refused in one line rather than half-fused."""
    decoder = model.get_decoder()
    layers = list(decoder.layers)
    norms = [decoder.norm] + [
        n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    mlps = [layer.mlp for layer in layers]
    for norm in norms:
        if not (hasattr(norm, "variance_epsilon") and getattr(norm, "weight", None) is not None):
            raise InputError(f"--liger: {type(norm).__name__} is not an RMSNorm with a weight (Mistral's)")
    for mlp in mlps:
        if not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
            raise InputError(f"--liger: {type(mlp).__name__} is not a gate/up/down MLP (Mistral's)")
    activation = getattr(model.config.get_text_config(), "hidden_act", None)
    if activation not in ("silu", "swish"):
        raise InputError(f"--liger: the decoder's activation is {activation!r}; Liger's SwiGLU needs silu")
    return norms, mlps


def _one_position(x: torch.Tensor) -> bool:
    """A decode step's input: one new position per sequence."""
    return x.dim() >= 2 and x.shape[-2] == 1


def _norm_forward(liger_rms_norm: Callable) -> Callable:
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _one_position(hidden_states):
            return type(self).forward(self, hidden_states)
        # in_place matters only in a backward pass (it reuses the incoming gradient's memory); False leaves
        # every tensor it is given untouched.
        return liger_rms_norm(hidden_states, self.weight, self.variance_epsilon, 0.0, "llama", False)

    return forward


def _mlp_forward(liger_swiglu: Callable) -> Callable:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _one_position(x):
            return type(self).forward(self, x)
        # gate_proj / up_proj may be peft LoRA layers: their outputs include the adapter's update.
        return self.down_proj(liger_swiglu(self.gate_proj(x), self.up_proj(x)))

    return forward


@contextlib.contextmanager
def liger_kernels(model) -> Iterator[int]:
    """Inside: the decoder's RMSNorms and MLPs run Liger's kernels on inputs of several positions per
    sequence (prompt passes); yields how many modules were bound.
    On exit (an exception too) each module's own forward is back. A one-line InputError when Liger is
    missing, the model is not on a GPU or the decoder is not Mistral-shaped."""
    problem = liger_problem(next(model.parameters()).device)
    if problem:
        raise InputError(problem)
    norms, mlps = fused_modules(model)
    from liger_kernel.transformers.functional import liger_rms_norm, liger_swiglu

    norm_forward, mlp_forward = _norm_forward(liger_rms_norm), _mlp_forward(liger_swiglu)
    bound = [(m, norm_forward) for m in norms] + [(m, mlp_forward) for m in mlps]
    if any("forward" in module.__dict__ for module, _ in bound):
        # accelerate's offloading hooks wrap forward on the instance; binding over them would skip them
        raise InputError("--liger: the decoder's modules already have wrapped forwards (a device_map hook?)")
    try:
        for module, forward in bound:
            module.forward = types.MethodType(forward, module)
        yield len(bound)
    finally:
        for module, _ in bound:
            module.__dict__.pop("forward", None)
