"""The benchmark's settings (BenchConfig) and constants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.cli import flag, shared_data_dir
from rrg.generate.run import EvalConfig

REPO = Path(__file__).resolve().parents[2]


DECODER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
H100_BF16_DENSE_FLOPS = 989e12  # datasheet peak (SXM); MFU is reported against it (fp8 rows' too)


@dataclass
class BenchConfig:
    out: str = flag("", "Results JSON ('': results/benchmark-<gpu>.json).")
    quick: bool = flag(False, "Fewer samples and configurations: a smoke check, not figures to report.")
    shared_data: str = flag(str(shared_data_dir()), "Shared data folder ($RRG_SHARED_DATA or ../shared/data).")
    workdir: str = flag("", "Where the random checkpoint is written ('': a temporary folder).")
    train_configs: str = flag(
        "8+compile+budget=0.7,8+compile+budget=0.7+plain",
        "Training configurations, comma-separated: micro-batch, then '+'-joined options: ckpt (gradient "
        "checkpointing), compile (train_lora.py --compile), budget=X (--activation_memory_budget X), log=N "
        "(--logging_steps N), plain (torch's AdamW on the bf16 LoRA weights, no fp32 master: the optimizer "
        "before rrg.train.optim, for comparison), fp8 (--fp8: FP8 frozen base matmuls; needs compile), "
        "lora=q_proj/v_proj (LoRA on these decoder projections only).",
    )
    qlora_configs: str = flag("16+ckpt+compile", "QLoRA training configurations (as --train_configs).")
    train_samples: int = flag(256, "Timed samples per configuration (after warm-up).", ge=1)
    grad_accum: int = flag(4, "Micro-batches per optimizer step in the timed loop.", ge=1)
    curve_steps: int = flag(
        50, "Optimizer steps (the 2 warm-up steps first) of each loss curve compared with the first's.", ge=0
    )
    reference_samples: int = flag(12, "Timed samples of the reference recipe (it is slow: keep it short).", ge=1)
    gen_configs: str = flag(
        "256,320",
        "Generation settings, comma-separated: batch size[:KV cache implementation[@torch.compile backend of "
        "its decode step]][+workers=N (loader workers)][+liger (Liger's RMSNorm and SwiGLU kernels)], e.g. "
        "256,256:static,256:static@cudagraphs,256+liger.",
    )
    gen_workers: int = flag(
        EvalConfig.num_workers, "Loader workers where --gen_configs names none (eval's default).", ge=0
    )
    loader_workers: str = flag("4,8", "Worker counts for which the eval loader alone is timed.")
    gen_reports: int = flag(1280, "Reports per batch-size setting (a multiple of each batch size).", ge=1)
    reference_gen_reports: int = flag(2, "Reports generated with the reference recipe.", ge=1)
    new_tokens: int = flag(100, "Every report is forced to exactly this length.", ge=1)
    gen_diagnose_batch: int = flag(128, "Batch size of the generation diagnosis.", ge=1)
    gen_diagnose_variants: str = flag("", "Comma-separated names (prompts/attention/cache); '': all.")
    num_workers: int = flag(8, "Training loader workers.", ge=0)
    train_profile: bool = flag(False, "Profile two accumulation groups of each training configuration.")
    trace_dir: str = flag("", "With --train_profile: write each profile there as a gzipped Chrome trace.")
    phases: str = flag("reference,lora,qlora,generation", "Comma-separated phases; also: diagnose.")
    markdown: str = flag("", "Print the Markdown table of an existing results JSON (no GPU needed) and exit.")
