"""train_lora.py's settings (TrainConfig): every training flag with its range."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from transformers import SchedulerType

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.cli import build_parser as build_settings_parser
from rrg.cli import check_ranges, flag
from rrg.data.entries import DEFAULT_IMAGE_DIR
from rrg.io import InputError

# LoRA on the Mistral decoder only. A bare ["q_proj", ...] list would also match CLIP's q/k/v/out
# projections (the reference adapter did exactly that), adapting the frozen vision tower by accident.
LANGUAGE_MODEL_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# The schedules get_scheduler builds from a warmup and a length alone (the others need more arguments).
NEEDS_MORE_ARGUMENTS = ("reduce_lr_on_plateau", "greedy", "cosine_with_min_lr", "cosine_warmup_with_min_lr")
SCHEDULERS = [s.value for s in SchedulerType if s.value not in (*NEEDS_MORE_ARGUMENTS, "warmup_stable_decay")]


@dataclass
class TrainConfig:
    """Every field is a flag (`--name VALUE`; booleans `--name` / `--no_name`)."""

    # data
    model_path: str = flag(
        "microsoft/llava-med-v1.5-mistral-7b",
        "Base model: the original LLaVA-Med checkpoint (converted once, cached) or an HF Llava folder / Hub id.",
    )
    json_file: str = flag("data/train_report.json", "Training split (JSON array or JSONL of entries).")
    image_dir: str = flag(DEFAULT_IMAGE_DIR, "Folder the entries' image names are looked up in.")
    val_json: str = flag("", "Validation split: val loss every --eval_steps and a best/ adapter ('': none).")
    output_dir: str = flag(
        "lora_weight", "Run folder: train_config.json, train_log.jsonl, checkpoints/, best/, final/."
    )
    views: Literal["first", "all"] = flag("first", "How many of an entry's images go into its prompt.")
    max_length: int = flag(
        2048, "Tokens per sample, image tokens included; longer reports lose their tail.", ge=1
    )
    skip_bad: bool = flag(
        False,
        "Skip (and count, in train_log.jsonl) entries with missing or unreadable images instead of stopping.",
    )
    # optimisation
    epochs: int = flag(10, "Passes over the training split (unless --max_steps is set).", ge=0)
    max_steps: int = flag(
        0, "> 0: stop after this many optimizer steps, and size the schedule to them.", ge=0
    )
    # Per-device micro-batch x accumulation = 64 samples per step, the reference's effective batch.
    # Micro-batch 8, compiled, no checkpointing was the fastest setting on an H100 (21.8 samples/s,
    # 38.3 GiB with fp32 master weights; results/benchmark-h100.json). Less memory: --gradient_checkpointing
    # --batch_size 16 --gradient_accumulation_steps 4 (13.5 samples/s, 22.5 GiB on an H100, without
    # the fp32 master weights; with --load_in_4bit 14.1 samples/s, 15.3 GiB).
    batch_size: int = flag(
        8,
        "Micro-batch per device; the effective batch is this x --gradient_accumulation_steps x processes.",
        ge=1,
    )
    gradient_accumulation_steps: int = flag(
        8, "Micro-batches per optimizer step (8 x 8 = the paper's 64).", ge=1
    )
    # above 1 is a typo for AdamW (and past float32's range torch's optimizer fails mid-step)
    lr: float = flag(
        2e-4, "Peak learning rate (AdamW; fp32 master weights when the model is bf16).", gt=0, le=1
    )
    lr_scheduler: str = flag(
        "cosine", "Learning-rate schedule (transformers.get_scheduler).", choices=SCHEDULERS
    )
    warmup_ratio: float = flag(
        0.03, "Share of the steps spent warming the learning rate up from 0.", ge=0, le=1
    )
    weight_decay: float = flag(0.0, "AdamW weight decay (not on 1-D parameters).", ge=0)
    max_grad_norm: float = flag(
        1.0, "Clip the gradient norm to this; <= 0: no clipping (the norm is still logged)."
    )
    seed: int = flag(42, "Seed of the weights' init, the sample order and dropout.", ge=0)
    # LoRA
    lora_r: int = flag(64, "LoRA rank.", ge=1)
    lora_alpha: int = flag(128, "LoRA alpha (the update is scaled by alpha / r).", gt=0)
    # 0.0 by default: dropout > 0 makes peft run every LoRA input through a dropout (an extra activation
    # kept for backward in each of the 224 adapted layers), which costs 15-40% step time and memory.
    lora_dropout: float = flag(0.0, "LoRA dropout; > 0 costs 15-40%% step time and memory.", ge=0, lt=1)
    # A bare ["q_proj", ...] list would also match CLIP's q/k/v projections (the reference adapter did).
    target_modules: str = flag(
        LANGUAGE_MODEL_TARGETS, "Modules that get LoRA: a regex (full match) or comma-separated names."
    )
    train_projector: bool = flag(False, "Also train (and save) the vision-to-text projector.")
    projector_lr: float = flag(
        0.0, "The projector's own learning rate beside LoRA (with --train_projector); 0: the LoRA --lr.", ge=0, le=1
    )
    stage: Literal["lora", "align"] = flag(
        "lora",
        "align: train the projector alone (LLM and vision tower frozen, no LoRA; LLaVA-Rad's stage 1 and its "
        "defaults for flags not given: lr 1e-3, cosine, warm-up 0.03, 1 epoch, global batch 256; rrg.train.align).",
    )
    projector_from: str = flag(
        "", "Start from this projector folder (an --stage align run's final/ or best/); the adapter saves it."
    )
    finding_weight: float = flag(
        1.0,
        "Loss weight of report tokens in sentences the offline labeler marks positive/uncertain (others 1; "
        "renormalised to mean 1 per accumulation group; rrg.train.finding_weights). Training set only.",
        gt=0,
    )
    # model / speed
    load_in_4bit: bool = flag(False, "QLoRA: nf4 base weights (CUDA only).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = flag(
        "auto", "Model weights' dtype; auto: bf16 on a GPU, fp32 on the CPU."
    )
    attn_implementation: str = flag("sdpa", "transformers attention implementation (sdpa, eager, ...).")
    gradient_checkpointing: bool = flag(
        False, "Recompute activations in backward: ~30%% slower, far less memory."
    )
    # torch.compile each decoder layer (one graph shared by all 32) on a GPU, single-process or DDP:
    # fuses the memory-bound elementwise work around the matmuls (eager 16.8 -> 22.1 samples/s at
    # micro-batch 8 on an H100). The first micro-batch pays the compilation (~1.5 min); the first validation
    # compiles its no-grad graphs (not timed).
    compile: bool = flag(
        True,
        "torch.compile each decoder layer on a GPU (one process or DDP): 16.8 -> 22.1 samples/s on an H100.",
    )
    # FP8 (torchao, rowwise scales) for the frozen base matmuls only: see rrg.model.kernels.float8.convert_frozen_base_linears.
    # On an H200: 27.2 vs 22.8 samples/s at the same memory, but its first 50 losses differ from bf16's by 1.8% on
    # average (10.1% at most; results/benchmark-h200.json): more than the 1% a default must hold, so opt-in.
    fp8: bool = flag(
        False,
        "FP8 matmuls for the decoder's frozen base weights (torchao, rowwise scales; LoRA, lm_head and CLIP stay "
        "bf16). Needs an FP8 GPU (H100/H200/L4/Ada), requirements-fp8.txt and --compile.",
    )
    # The compiler recomputes the cheapest ops (norms, activations) first. 0.7 took compiled
    # micro-batch 8 from 45.7 to 34.9 GiB on an H100. It sets the process-wide
    # torch._functorch.config.activation_memory_budget.
    activation_memory_budget: float = flag(
        0.7,
        "With --compile, no checkpointing: share of activation memory kept for backward (1.0: all the compiler keeps).",
        ge=0,
        le=1,
    )
    num_workers: int = flag(4, "DataLoader workers (image loading and preprocessing).", ge=0)
    # checkpoints, evaluation, logging
    save_steps: int = flag(0, "Checkpoint every N optimizer steps (0: only at epoch ends).", ge=0)
    save_total_limit: int = flag(2, "Keep this run's newest N step checkpoints (0: all).", ge=0)
    eval_steps: int = flag(0, "Validation every N optimizer steps (0: at epoch ends).", ge=0)
    eval_batch_size: int = flag(0, "Validation micro-batch (0: --batch_size).", ge=0)
    # A log line reads the loss back from the GPU (a wait for it); steps in between never do. On an H100
    # one line per step cost nothing measurable: 22.07 samples/s vs 22.10 with one per 10 steps.
    logging_steps: int = flag(
        1,
        "A train_log.jsonl line (and a finite-loss check) every N steps, before checkpoints and validations.",
        ge=1,
    )
    report_to: Literal["none", "tensorboard"] = flag(
        "none", "Also log to TensorBoard (output_dir/tensorboard)."
    )
    resume: str = flag(
        "",
        "Continue a run: bare --resume = the newest intact checkpoint in output_dir, or a checkpoint folder "
        "(its settings must match).",
    )
    overwrite: bool = flag(
        False,
        "Start over in an output_dir that holds a run: delete its train_config.json, train_log.jsonl, "
        "checkpoints/, best/, final/, tensorboard/ (nothing else).",
    )
    stop_after_steps: int = flag(
        0, "Checkpoint and exit after N optimizer steps, as if killed (time-boxed jobs).", ge=0
    )


def build_parser():
    return build_settings_parser(TrainConfig, description=__doc__)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg_ in enumerate(argv):  # a bare `--resume` means `--resume latest`
        if arg_ == "--resume" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            argv.insert(i + 1, "latest")
            break
    (config,) = build_parser().parse_args_into_dataclasses(args=argv)
    check_ranges(config)
    if config.resume and config.overwrite:
        raise InputError("--resume continues the run in output_dir, --overwrite deletes it: pass one of them")
    if config.epochs == 0 and config.max_steps == 0:
        raise InputError("--epochs 0 with --max_steps 0 trains nothing: give one of them a positive value")
    return config
