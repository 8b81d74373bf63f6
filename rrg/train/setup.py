"""Training setup: the model with its adapter, the checked split files, the loaders, the run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.io import InputError, append_jsonl
from rrg.model.kernels.float8 import convert_frozen_base_linears, float8_problem
from rrg.model.load import load_base_model
from rrg.train import align
from rrg.train import checkpoints as C
from rrg.train import step as T
from rrg.train.settings import TrainConfig


def model_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def target_modules(spec: str) -> str | list[str]:
    """A regex (peft full-matches it against module names) or a comma-separated list of name suffixes."""
    if any(c in spec for c in "*()|\\"):
        return spec
    return [name.strip() for name in spec.split(",") if name.strip()]


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
