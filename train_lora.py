"""LoRA / QLoRA fine-tuning of LLaVA-Med-v1.5-Mistral-7B for radiology report generation.

One GPU:    python train_lora.py --model_path microsoft/llava-med-v1.5-mistral-7b \\
                --json_file data/train_report.json --image_dir data/images --output_dir lora_weight
N GPUs:     accelerate launch --config_file scripts/accelerate/ddp.yaml --num_processes N train_lora.py ...
Resume:     the same command plus --resume (newest checkpoint in output_dir) or --resume PATH

--batch_size is the per-device micro-batch; the effective batch is
batch_size x gradient_accumulation_steps x number of processes (printed at start).

output_dir/ (one run each: a second run into it is refused while one holds its lock, and a new run
refuses a folder with a previous run in it unless given --resume or --overwrite)
    train_config.json           resolved configuration (+ world size, steps, dataset sizes, fingerprint)
    train_log.jsonl             {"type": "train", step, epoch, loss, lr, grad_norm, samples_per_s, tokens_per_s,
                                elapsed_s} / {"type": "eval", step, epoch, val_loss}, one line per event
    checkpoints/step-XXXXXX/    adapter + optimizer.pt (with the fp32 master weights), scheduler.pt, rng.pt,
                                state.json (the run's fingerprint, every file's sha256) for --resume
    best/                       adapter with the lowest validation loss (when --val_json is given)
    final/                      adapter at the end of training
--stage align trains the projector alone (rrg.align): final/, best/ and the checkpoints then hold
projector.safetensors + projector.json instead of an adapter; --projector_from FOLDER starts a LoRA run from it.
A non-finite loss, gradient norm or weight stops training with the step and the last good checkpoint.
Adapters are PEFT folders: rrg.model.load_adapter(model, "lora_weight/final") or PeftModel.from_pretrained.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, NoReturn

# Batches of varying length near the memory limit fragment PyTorch's caching allocator; every
# cudaFree it then needs stalls the GPU (measured on an H100: 10.2 -> 11.8 samples/s at micro-batch 8).
# Expandable segments avoid that. Set before torch initialises CUDA; a user's own setting wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import broadcast_object_list, set_seed  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import AutoConfig, SchedulerType  # noqa: E402

from rrg import align  # noqa: E402
from rrg import checkpoints as C  # noqa: E402
from rrg import train as T  # noqa: E402
from rrg.cli import build_parser as build_settings_parser  # noqa: E402
from rrg.cli import check_ranges, exits_on_input_error, flag  # noqa: E402
from rrg.collate import Collator, ReportDataset, encode_dataset, eval_batches, length_grouped_batches  # noqa: E402
from rrg.entries import DEFAULT_IMAGE_DIR  # noqa: E402
from rrg.float8 import convert_frozen_base_linears, float8_problem  # noqa: E402
from rrg.inputs import split_images_sha256  # noqa: E402
from rrg.io import InputError, append_jsonl, atomic_write_json, disk_full_is_one_line  # noqa: E402
from rrg.lock import output_lock  # noqa: E402
from rrg.model import load_base_model, load_processor, resolve_model_path  # noqa: E402
from rrg.optim import MasterWeightAdamW  # noqa: E402
from rrg.processor import image_token_id, tokens_per_image  # noqa: E402
from rrg.ranks import main_process_decides  # noqa: E402

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
    # --batch_size 16 --gradient_accumulation_steps 4 (13.5 samples/s, 22.5 GiB, an earlier session, before
    # master weights; with --load_in_4bit 14.1 samples/s, 15.3 GiB).
    batch_size: int = flag(
        8,
        "Micro-batch per device; the effective batch is this x --gradient_accumulation_steps x processes.",
        ge=1,
    )
    gradient_accumulation_steps: int = flag(
        8, "Micro-batches per optimizer step (8 x 8 = the paper's 64).", ge=1
    )
    # finite=False: an infinite rate stops training at its first step with a one-line error (tests use it to
    # make non-finite weights); NaN is refused below.
    lr: float = flag(
        2e-4, "Peak learning rate (AdamW; fp32 master weights when the model is bf16).", gt=0, finite=False
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
        0.0, "The projector's own learning rate beside LoRA (with --train_projector); 0: the LoRA --lr.", ge=0
    )
    stage: Literal["lora", "align"] = flag(
        "lora",
        "align: train the projector alone (LLM and vision tower frozen, no LoRA; LLaVA-Rad's stage 1 and its "
        "defaults for flags not given: lr 1e-3, cosine, warm-up 0.03, 1 epoch, global batch 256; rrg.align).",
    )
    projector_from: str = flag(
        "", "Start from this projector folder (an --stage align run's final/ or best/); the adapter saves it."
    )
    finding_weight: float = flag(
        1.0,
        "Loss weight of report tokens in sentences the offline labeler marks positive/uncertain (others 1; "
        "renormalised to mean 1 per accumulation group; rrg.finding_weights). Training set only.",
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
    # FP8 (torchao, rowwise scales) for the frozen base matmuls only: see rrg.float8.convert_frozen_base_linears.
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


# Settings that do not change what is trained (where, how fast, how often it is written or logged), left
# out of the run's fingerprint: a run may be resumed with other values of these. compile, attention and
# checkpointing change only the arithmetic's order. json_file/val_json enter by their content's sha256
# (a moved copy is the same data; a re-generated split is not); image_dir enters as what the entries'
# images resolve to in it (images_sha256: each file's place, size and mtime; see rrg.inputs).
NOT_FINGERPRINTED = (
    "output_dir",
    "projector_from",  # enters by its projector's sha256
    "json_file",
    "val_json",
    "image_dir",
    "attn_implementation",
    "gradient_checkpointing",
    "compile",
    "activation_memory_budget",
    "num_workers",
    "save_steps",
    "save_total_limit",
    "eval_batch_size",
    "logging_steps",
    "report_to",
    "resume",
    "overwrite",
    "stop_after_steps",
)


# Settings that change the result but were added after runs had been started: they enter the fingerprint
# only when set away from this default, so a run started before they existed (which ran at the default)
# still resumes, and one started with them set is not resumed without them.
ADDED_LATER = {
    "fp8": False,
    "finding_weight": 1.0,
    "projector_lr": 0.0,
    "stage": "lora",
    "projector_from_sha256": "",
}


def run_fingerprint(cfg: TrainConfig, accelerator: Accelerator) -> dict:
    """The settings that change the result (every TrainConfig field not in NOT_FINGERPRINTED, those of
    ADDED_LATER only when not at their default, the split files' sha256, the resolved dtype, the number and
    kind of processes), and their digest."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    if cfg.projector_from:
        settings["projector_from_sha256"] = align.read_projector(cfg.projector_from)[1]["projector_sha256"]
    if cfg.stage == "align":
        settings = {k: v for k, v in settings.items() if k not in align.LORA_ONLY}
    for name, default in ADDED_LATER.items():
        if settings.get(name, default) == default:
            settings.pop(name, None)
    settings["dtype"] = str(model_dtype(cfg.dtype)).removeprefix("torch.")
    for name in ("json_file", "val_json"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise InputError(f"{path}: file not found (--{name})")
        settings[f"{name}_sha256"] = C.file_sha256(path) if path else None
    # Another --image_dir, or a replaced image, is another training set (rrg.inputs says what is compared).
    settings["images_sha256"] = split_images_sha256(
        [p for p in (cfg.json_file, cfg.val_json) if p], cfg.image_dir
    )
    settings["world_size"] = accelerator.num_processes
    settings["distributed_type"] = accelerator.distributed_type.name
    return C.fingerprint(settings)


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
    if math.isnan(config.lr):
        raise InputError("--lr must be a finite number (got nan)")
    if config.epochs == 0 and config.max_steps == 0:
        raise InputError("--epochs 0 with --max_steps 0 trains nothing: give one of them a positive value")
    return config


def model_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def target_modules(spec: str) -> str | list[str]:
    """A regex (peft full-matches it against module names) or a comma-separated list of name suffixes."""
    if any(c in spec for c in "*()|\\"):
        return spec
    return [name.strip() for name in spec.split(",") if name.strip()]


# --------------------------------------------------------------------------- setup


def checked_entries(path: str, cfg: TrainConfig, accelerator: Accelerator, what: str) -> tuple[list, int]:
    """Pre-flight check (main process), shared with the other ranks: (entries, number skipped)."""
    result = [None, None]
    if accelerator.is_main_process:
        result = list(T.preflight_entries(path, cfg.image_dir, cfg.views, workers=max(cfg.num_workers, 4)))
    if accelerator.num_processes > 1:
        broadcast_object_list(result)
    entries, problems = result
    if problems:
        if accelerator.is_main_process:
            for problem in problems[:50]:
                print(f"  bad entry: {problem}", file=sys.stderr)
            if len(problems) > 50:
                print(f"  ... and {len(problems) - 50} more", file=sys.stderr)
        if not cfg.skip_bad:
            raise InputError(
                f"{path}: {len(problems)} bad {what} entries (listed above; first: {problems[0]}). "
                "Fix them, or pass --skip_bad to train without them."
            )
        if accelerator.is_main_process:
            print(f"skipping {len(problems)} bad {what} entries of {path} (--skip_bad)")
            append_jsonl(
                Path(cfg.output_dir) / "train_log.jsonl",
                {"type": "skipped", "file": str(path), "count": len(problems), "entries": problems},
            )
    if not entries:
        raise InputError(f"{path}: no usable entries")
    return entries, len(problems)


def check_fp8(cfg: TrainConfig, accelerator: Accelerator) -> None:
    """--fp8's refused combinations, one line each (torchao and the GPU are checked by build_model);
    also --projector_lr without --train_projector (a rate for nothing trained)."""
    if cfg.projector_lr and not cfg.train_projector:
        raise InputError("--projector_lr sets the projector's rate: it needs --train_projector")
    align.check_settings(cfg)
    if not cfg.fp8:
        return
    if cfg.load_in_4bit:
        raise InputError(
            "--fp8 computes with the bf16 base weights, --load_in_4bit makes them nf4: pass one of them"
        )
    if not cfg.compile:
        raise InputError(
            "--fp8 needs --compile: run eagerly, torchao's FP8 linear also computes the frozen weights' "
            "gradient (a wasted matmul)"
        )
    kind = accelerator.distributed_type.name
    if kind in ("FSDP", "DEEPSPEED"):
        raise InputError(f"--fp8 is untested under {kind} (which runs eagerly here); use one GPU or DDP")


def build_model(cfg: TrainConfig, accelerator: Accelerator, fp8_emulate: bool = False):
    """Base model (bf16 or 4-bit) + LoRA; vision tower frozen, projector frozen unless --train_projector.

    --fp8: the frozen base linears of the LoRA layers compute in FP8 (`fp8_emulate`: torchao's emulation,
    which needs no FP8 GPU: tests)."""
    from peft import LoraConfig, get_peft_model

    check_fp8(cfg, accelerator)
    if cfg.fp8 and (problem := float8_problem(accelerator.device, fp8_emulate)):
        raise InputError(problem)  # before the model is loaded
    dtype = model_dtype(cfg.dtype)
    device_map = None
    if accelerator.device.type == "cuda" and accelerator.distributed_type.name in ("NO", "MULTI_GPU"):
        device_map = {"": accelerator.device}  # load straight onto this rank's GPU
    model = load_base_model(
        cfg.model_path,
        dtype=dtype,
        load_in_4bit=cfg.load_in_4bit,
        attn_implementation=cfg.attn_implementation,
        device_map=device_map,
    )
    model.requires_grad_(False)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.projector_from:  # before LoRA: peft's modules_to_save copy is made from these weights
        align.load_projector(model, cfg.projector_from)
    if cfg.stage == "align":
        model = align.ProjectorStage(model, align.provenance(cfg, model))
        return finish_model(model, cfg, accelerator, device_map)
    # No prepare_model_for_kbit_training under 4-bit: it upcasts every unquantised weight to fp32,
    # which costs speed and memory; bf16 norms/embeddings train fine with bf16 compute.
    lora_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules(cfg.target_modules),
        # A starting projector is saved in the adapter too (trained or not), so every loader gets it.
        modules_to_save=["multi_modal_projector"] if cfg.train_projector or cfg.projector_from else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # autocast_adapter_dtype=False: peft would otherwise keep LoRA weights in fp32 on a bf16 model,
    # forcing a cast on every adapted matmul.
    model = get_peft_model(model, lora_config, autocast_adapter_dtype=False)
    if cfg.projector_from and not cfg.train_projector:  # saved with the adapter, kept frozen
        for name, p in model.named_parameters():
            if T.PROJECTOR in name:
                p.requires_grad_(False)
    if cfg.fp8:  # peft's base_layer modules exist now; compiling comes after, so it traces the FP8 linears
        converted = convert_frozen_base_linears(model, emulate=fp8_emulate)
        if accelerator.is_main_process:
            print(f"--fp8: {converted} frozen base linears compute in FP8 (torchao, rowwise scales)")
    return finish_model(model, cfg, accelerator, device_map)


def finish_model(model, cfg: TrainConfig, accelerator: Accelerator, device_map):
    """Compile (on a GPU), check the vision tower is frozen, train mode."""
    if cfg.compile and device_map is not None:  # a GPU, one process or DDP (not FSDP/DeepSpeed: untested)
        if not cfg.gradient_checkpointing:  # checkpointing already recomputes everything it can
            import torch._functorch.config as functorch_config

            functorch_config.activation_memory_budget = cfg.activation_memory_budget
        T.compile_decoder_layers(model)
    frozen_tower = [n for n, p in model.named_parameters() if "vision_tower" in n and p.requires_grad]
    if frozen_tower:
        raise InputError(f"--target_modules adapts the vision tower ({frozen_tower[0]}); it must stay frozen")
    if accelerator.is_main_process:
        model.print_trainable_parameters()
    model.train()
    return model


def make_loader(dataset, batches, collator, cfg: TrainConfig, pin_memory: bool):
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collator,
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
    )


# --------------------------------------------------------------------------- the run folder


def prepare_output_dir(cfg: TrainConfig, fingerprint: dict) -> str | None:
    """Main process, under the output lock: the checkpoint to resume from (verified, with this run's
    fingerprint), or None to start from scratch; the folder's previous run refused, cleared or cut back."""
    output_dir = Path(cfg.output_dir)
    found = C.previous_run(output_dir)
    if cfg.overwrite:
        if found:
            print(f"--overwrite: deleting the previous run in {output_dir} ({', '.join(found)})")
        C.clear_run(output_dir)
        return None
    if not cfg.resume:
        if found:
            raise InputError(
                f"{output_dir}: holds a previous run ({', '.join(found)}); "
                "pass --resume to continue it or --overwrite to start over"
            )
        return None
    C.check_run_config(output_dir, fingerprint)
    checkpoint = C.find_checkpoint(cfg.resume, output_dir)
    if checkpoint is None:
        print(f"--resume: no checkpoint in {output_dir / 'checkpoints'}; starting from scratch")
        C.clear_run(output_dir)  # the killed run's log lines and adapters
        return None
    path, record = checkpoint
    C.check_fingerprint(record["fingerprint"], fingerprint, path)
    C.truncate_log(output_dir / "train_log.jsonl", record["state"]["step"])
    return str(path)


# --------------------------------------------------------------------------- train


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(argv)
    accelerator = Accelerator(
        log_with="tensorboard" if cfg.report_to == "tensorboard" else None, project_dir=cfg.output_dir
    )
    if cfg.stage == "align":
        given = align.given_flags(list(sys.argv[1:] if argv is None else argv))
        cfg = align.stage_defaults(cfg, given, accelerator.num_processes)
    with contextlib.ExitStack() as stack:
        # One run per output folder for the whole run (the main process holds it; see rrg.lock).
        main_process_decides(
            accelerator, lambda: str(stack.enter_context(output_lock(cfg.output_dir, "training")))
        )
        with disk_full_is_one_line(cfg.output_dir):  # checkpoints, the log, adapters
            train(cfg, accelerator)


def train(cfg: TrainConfig, accelerator: Accelerator) -> None:
    is_main = accelerator.is_main_process
    world = accelerator.num_processes
    output_dir = Path(cfg.output_dir)
    log_path = output_dir / "train_log.jsonl"
    check_fp8(cfg, accelerator)  # before anything is read or written
    fingerprint = run_fingerprint(cfg, accelerator)
    resume_from = main_process_decides(accelerator, lambda: prepare_output_dir(cfg, fingerprint))
    set_seed(cfg.seed)

    # Text side: tokenise every entry once; the workers only load images.
    processor = load_processor(cfg.model_path)
    tokenizer = processor.tokenizer
    per_image = tokens_per_image(AutoConfig.from_pretrained(resolve_model_path(cfg.model_path)))
    train_entries, skipped = checked_entries(cfg.json_file, cfg, accelerator, "training")
    train_set = ReportDataset(
        encode_dataset(
            train_entries, tokenizer, cfg.image_dir, per_image, cfg.views, cfg.max_length, cfg.finding_weight
        ),
        processor.image_processor,
    )
    val_set = None
    if cfg.val_json:
        val_entries, _ = checked_entries(cfg.val_json, cfg, accelerator, "validation")
        val_set = ReportDataset(
            encode_dataset(val_entries, tokenizer, cfg.image_dir, per_image, cfg.views, cfg.max_length),
            processor.image_processor,
        )
    collator = Collator(tokenizer.pad_token_id, image_token_id(tokenizer), per_image, pad_to_multiple_of=8)

    # Schedule length: every rank runs the same number of micro-batches (see length_grouped_batches).
    micro_batches = len(length_grouped_batches(train_set.lengths(), cfg.batch_size, world, 0, cfg.seed, 0))
    per_epoch = T.steps_per_epoch(micro_batches, cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * per_epoch
    n_epochs = math.ceil(total_steps / per_epoch)
    resolved = {
        **asdict(cfg),
        "world_size": world,
        "effective_batch_size": cfg.batch_size * cfg.gradient_accumulation_steps * world,
        "image_tokens_per_image": per_image,
        "train_entries": len(train_set),
        "val_entries": len(val_set) if val_set else 0,
        "skipped_entries": skipped,
        "steps_per_epoch": per_epoch,
        "total_steps": total_steps,
    }
    if is_main:
        if resume_from is None:
            print("configuration:\n" + json.dumps(resolved, indent=2))
        else:  # the same settings as the run it continues (the fingerprint says so): not printed again
            print(f"configuration: as printed when the run started ({output_dir / 'train_config.json'})")
        print(
            f"effective batch = {cfg.batch_size} (per device) x {cfg.gradient_accumulation_steps} "
            f"(accumulation) x {world} (processes) = {resolved['effective_batch_size']}"
        )
        atomic_write_json(output_dir / "train_config.json", {**resolved, "fingerprint": fingerprint})

    model = build_model(cfg, accelerator)
    if cfg.stage == "align":
        model.provenance["run_fingerprint"] = fingerprint["digest"]
    optimizer = T.build_optimizer(model, cfg.lr, cfg.weight_decay, accelerator, cfg.projector_lr or None)
    masters = isinstance(optimizer, MasterWeightAdamW)
    low_precision = any(p.dtype != torch.float32 for p in model.parameters() if p.requires_grad)
    if is_main and low_precision and not masters and accelerator.distributed_type.name != "DEEPSPEED":
        print(  # DeepSpeed keeps fp32 masters itself (bf16 in its config); FSDP does not
            f"warning: under {accelerator.distributed_type.name} the LoRA weights are updated in "
            f"{model_dtype(cfg.dtype)} without fp32 master weights; small updates may round away"
        )
    scheduler = T.build_scheduler(optimizer, cfg.lr_scheduler, total_steps, cfg.warmup_ratio)
    # The scheduler is stepped by hand once per optimizer step (accelerate would step it per process).
    T.size_deepspeed_batch(accelerator, cfg.batch_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    dtype = model_dtype(cfg.dtype)

    state = C.TrainState(seed=cfg.seed, skipped_entries=skipped)
    last_checkpoint = Path(resume_from) if resume_from else None
    if last_checkpoint is not None:
        state = C.load_checkpoint(last_checkpoint, model, optimizer, scheduler, accelerator)
        state.skipped_entries = skipped
        if is_main:
            print(
                f"resumed from {last_checkpoint}: step {state.step}, epoch {state.epoch}, "
                f"batch {state.batches_done}"
            )
    if cfg.report_to == "tensorboard":
        accelerator.init_trackers("tensorboard", config={k: v for k, v in resolved.items() if v is not None})

    def stop(step: int, what: str) -> NoReturn:
        """A non-finite loss, gradient or weight: stop, naming the step and the checkpoint to go back to."""
        bar.close()
        last = last_checkpoint if last_checkpoint is not None else "none (start over with --overwrite)"
        raise T.TrainingDiverged(f"step {step}: {what}; training stopped. Last good checkpoint: {last}")

    def check_window(values: dict | None = None) -> None:
        """Stop if a step since the last check had a non-finite loss or gradient norm (reads the GPU)."""
        if values is None:  # not at a log line: read the window without ending it
            rows = window.rows()
            values = {"steps": len(rows), "first_nonfinite": window.first_nonfinite(rows)}
        if values["first_nonfinite"] is not None:
            first_step = state.step - values["steps"] + 1 + values["first_nonfinite"]
            stop(first_step, "the loss or the gradient norm is not finite")

    def check_weights() -> None:
        if not T.weights_finite(model, accelerator):
            stop(state.step, "the trained weights are not finite")

    def run_eval() -> None:
        if val_set is None:
            return
        check_window()  # evaluating waits for the GPU anyway
        batches = eval_batches(
            len(val_set), cfg.eval_batch_size or cfg.batch_size, world, accelerator.process_index
        )
        loader = make_loader(
            val_set, [b for b, _ in batches], collator, cfg, accelerator.device.type == "cuda"
        )
        val_loss = T.evaluate(model, zip(loader, [c for _, c in batches]), accelerator, dtype)
        if not math.isfinite(val_loss):
            stop(state.step, f"the validation loss is {val_loss}")
        improved = state.best_val_loss is None or val_loss < state.best_val_loss
        if improved:
            state.best_val_loss = val_loss
            save_adapter("best")
        if is_main:
            record = {"type": "eval", "step": state.step, "epoch": epoch_progress(), "val_loss": val_loss}
            append_jsonl(log_path, record)
            accelerator.log({"val_loss": val_loss}, step=state.step)
            tqdm.write(f"step {state.step}: val_loss {val_loss:.4f}" + (" (best)" if improved else ""))

    def epoch_progress() -> float:
        return state.epoch + state.batches_done / max(len(batches), 1)

    def save_adapter(name: str) -> None:
        check_weights()
        C.save_final_adapter(model, output_dir / name, accelerator)

    def save() -> Path:
        check_weights()
        return C.save_checkpoint(
            output_dir, model, optimizer, scheduler, state, accelerator, fingerprint, cfg.save_total_limit
        )

    bar = tqdm(total=total_steps, initial=state.step, disable=not is_main, desc="training", unit="step")
    # The loss and gradient norm are read (a wait for the GPU) only at log lines, which come before every
    # checkpoint, and before validations: that is where non-finite values are caught, at no extra wait.
    window = T.StepWindow()
    run_start = time.perf_counter() - state.elapsed_s
    last_saved = state.step if last_checkpoint is not None else -1
    batches: list[list[int]] = []
    while state.epoch < n_epochs and state.step < total_steps:
        batches = length_grouped_batches(
            train_set.lengths(), cfg.batch_size, world, accelerator.process_index, state.seed, state.epoch
        )
        loader = iter(
            make_loader(
                train_set, batches[state.batches_done :], collator, cfg, accelerator.device.type == "cuda"
            )
        )
        while state.batches_done < len(batches) and state.step < total_steps:
            # The last group of an epoch may be short: it is stepped on, normalised by its own token count.
            group = [
                next(loader)
                for _ in range(min(cfg.gradient_accumulation_steps, len(batches) - state.batches_done))
            ]
            stats = T.accumulate_gradients(model, group, accelerator, dtype)
            grad_norm = T.clip_gradients(accelerator, model, optimizer, cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batches_done += len(group)
            window.add(stats, grad_norm)
            bar.update(1)
            epoch_done = state.batches_done == len(batches)
            will_save = epoch_done or (cfg.save_steps > 0 and state.step % cfg.save_steps == 0)
            stopping = bool(cfg.stop_after_steps) and state.step >= cfg.stop_after_steps
            # A checkpoint is written after a log line, so its samples_seen counts every step before it.
            if state.step % cfg.logging_steps == 0 or state.step == total_steps or will_save or stopping:
                values = window.read()
                check_window(values)
                state.samples_seen += int(values["samples"])
                record = {
                    "type": "train",
                    "step": state.step,
                    "epoch": round(epoch_progress(), 4),
                    "loss": values["loss"],
                    "lr": lr,
                    "grad_norm": values["grad_norm"],
                    "samples_per_s": values["samples_per_s"],
                    "tokens_per_s": values["tokens_per_s"],
                    "elapsed_s": time.perf_counter() - run_start,
                }
                if is_main:
                    append_jsonl(log_path, record)
                    accelerator.log(
                        {k: v for k, v in record.items() if k not in ("type", "step")}, step=state.step
                    )
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        lr=f"{record['lr']:.2e}",
                        sps=f"{record['samples_per_s']:.1f}",
                    )
            if epoch_done:
                state.epoch += 1
                state.batches_done = 0
            if cfg.eval_steps > 0 and state.step % cfg.eval_steps == 0 or epoch_done and cfg.eval_steps <= 0:
                run_eval()
            state.elapsed_s = time.perf_counter() - run_start
            if will_save:
                last_checkpoint = save()
                last_saved = state.step
            if stopping:
                if last_saved != state.step:
                    last_checkpoint = save()
                bar.close()
                if is_main:
                    print(f"stopped after step {state.step} (--stop_after_steps); continue with --resume")
                accelerator.end_training()
                return
            if epoch_done:
                break  # the next epoch has its own order and loader
    bar.close()
    if cfg.eval_steps > 0 and state.step % cfg.eval_steps != 0:
        run_eval()  # the last steps were not evaluated yet
    save_adapter("final")
    if is_main:
        print(f"done: {state.step} steps; adapter in {output_dir / 'final'}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
