"""Measuring: GPU time and memory, parameter counts, training FLOPs."""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager

import torch

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print


def free_gpu() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30


@contextmanager
def timed() -> dict:
    result: dict = {}
    torch.cuda.synchronize()
    start = time.perf_counter()
    yield result
    torch.cuda.synchronize()
    result["s"] = time.perf_counter() - start


def gpu_time_split(prof, per: int) -> dict:
    """GPU kernel time of a profile by kind, in ms per `per` (samples, steps), and the top kernels.

    Kernels only: an operator's row repeats the time of the kernels it launched.
    """
    kinds = {"matmul": 0.0, "attention": 0.0, "fused (triton)": 0.0, "other": 0.0}
    events = prof.key_averages()
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = e.key.lower()
        # Attention first: flash attention's kernel names carry cutlass and sm90 template types too.
        if any(s in name for s in ("flash", "fmha", "attention")):
            kind = "attention"
        elif any(s in name for s in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90")):
            kind = "matmul"
        elif name.startswith("triton"):
            kind = "fused (triton)"
        else:
            kind = "other"
        kinds[kind] += e.self_device_time_total / 1000 / per
    return {
        "gpu_busy_ms": sum(kinds.values()),
        "gpu_ms_by_kind": kinds,
        "top_kernels": events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60),
    }


def param_counts(model) -> dict[str, int]:
    counts = {"decoder": 0, "lm_head": 0, "vision": 0}
    for name, p in model.named_parameters():
        n = p.numel() * (2 if p.dtype == torch.uint8 else 1)  # bnb packs two 4-bit weights per byte
        if "lm_head" in name:
            counts["lm_head"] += n
        elif "vision_tower" in name:
            counts["vision"] += n
        elif "embed_tokens" not in name:  # a lookup, no FLOPs
            counts["decoder"] += n
    return counts


def training_flops(
    params: dict[str, int], tokens: int, label_tokens: int, images: int, vision_tokens: int
) -> float:
    """Model FLOPs of LoRA steps without recomputation.

    Frozen weights need the forward (2 FLOPs/param/token) and the input gradient (2 more), not the
    weight gradient: 4 x params x tokens for the decoder, lm_head only at label positions, and a
    forward-only frozen vision tower. Attention scores and LoRA's own small matmuls are left out.
    """
    return (
        4 * params["decoder"] * tokens
        + 4 * params["lm_head"] * label_tokens
        + 2 * params["vision"] * vision_tokens * images
    )
