"""LoRA / QLoRA fine-tuning of LLaVA-Med-v1.5-Mistral-7B for radiology report generation.

One GPU:    python train_lora.py --model_path microsoft/llava-med-v1.5-mistral-7b \\
                --json_file data/train_report.json --image_dir data/images --output_dir lora_weight
N GPUs:     accelerate launch --config_file scripts/accelerate/ddp.yaml --num_processes N train_lora.py ...
Resume:     the same command plus --resume (newest checkpoint in output_dir) or --resume PATH

--batch_size is the per-device micro-batch; the effective batch is
batch_size x gradient_accumulation_steps x number of processes (printed at start).

output_dir/
    train_config.json           resolved configuration (+ world size, steps, dataset sizes)
    train_log.jsonl             {"type": "train", step, epoch, loss, lr, grad_norm, samples_per_s, tokens_per_s,
                                elapsed_s} / {"type": "eval", step, epoch, val_loss}, one line per event
    checkpoints/step-XXXXXX/    adapter + optimizer.pt, scheduler.pt, rng.pt, state.json (for --resume)
    best/                       adapter with the lowest validation loss (when --val_json is given)
    final/                      adapter at the end of training
Adapters are PEFT folders: rrg.model.load_adapter(model, "lora_weight/final") or PeftModel.from_pretrained.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Batches of varying length near the memory limit fragment PyTorch's caching allocator; every
# cudaFree it then needs stalls the GPU (measured on an H100: 10.2 -> 11.8 samples/s at micro-batch 8).
# Expandable segments avoid that. Set before torch initialises CUDA; a user's own setting wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import broadcast_object_list, set_seed  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import AutoConfig, HfArgumentParser  # noqa: E402

from rrg import train as T  # noqa: E402
from rrg.cli import exits_on_input_error  # noqa: E402
from rrg.collate import Collator, ReportDataset, encode_dataset, eval_batches, length_grouped_batches  # noqa: E402
from rrg.io import InputError, append_jsonl, atomic_write_json  # noqa: E402
from rrg.model import load_base_model, load_processor, resolve_model_path  # noqa: E402
from rrg.processor import image_token_id, tokens_per_image  # noqa: E402

# LoRA on the Mistral decoder only. A bare ["q_proj", ...] list would also match CLIP's q/k/v/out
# projections (the reference adapter did exactly that), adapting the frozen vision tower by accident.
LANGUAGE_MODEL_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class TrainConfig:
    # data
    model_path: str = "microsoft/llava-med-v1.5-mistral-7b"
    json_file: str = "data/train_report.json"
    image_dir: str = "data/images"
    val_json: str = ""  # validation split: val loss every --eval_steps, best/ adapter kept
    output_dir: str = "lora_weight"
    views: str = "first"  # first | all: how many of an entry's images go into its prompt
    max_length: int = 2048  # tokens per sample (image tokens included); longer reports lose their tail
    skip_bad: bool = False  # skip (and count) entries with missing/unreadable images instead of stopping
    # optimisation
    epochs: int = 10
    max_steps: int = 0  # > 0: stop after this many optimizer steps (and size the schedule to it)
    # Per-device micro-batch x accumulation = 64 samples per step, the reference's effective batch.
    # Micro-batch 8, compiled, no checkpointing was the fastest setting on an H100 (22.1 samples/s,
    # 36.5 GiB; results/benchmark-h100.json). Less memory: --gradient_checkpointing --batch_size 16
    # --gradient_accumulation_steps 4 (13.5 samples/s, 22.5 GiB, an earlier session; with --load_in_4bit
    # 14.1 samples/s, 13.2 GiB).
    batch_size: int = 8
    gradient_accumulation_steps: int = 8
    lr: float = 2e-4
    # any transformers.get_scheduler name: cosine, linear, constant_with_warmup, ...
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # <= 0: no clipping (the norm is still logged)
    seed: int = 42
    # LoRA
    lora_r: int = 64
    lora_alpha: int = 128
    # 0.0 by default: dropout > 0 makes peft run every LoRA input through a dropout (an extra activation
    # kept for backward in each of the 224 adapted layers), which costs 15-40% step time and memory.
    lora_dropout: float = 0.0
    target_modules: str = LANGUAGE_MODEL_TARGETS  # regex (full match) or comma-separated module names
    train_projector: bool = False  # also train (and save) the vision->text projector
    # model / speed
    load_in_4bit: bool = False  # QLoRA: nf4 base weights (CUDA only)
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float16 | float32
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False  # trades ~30% speed for much less activation memory
    # torch.compile each decoder layer (one graph shared by all 32) on a GPU, single-process or DDP:
    # fuses the memory-bound elementwise work around the matmuls (eager 16.8 -> 22.1 samples/s at
    # micro-batch 8 on an H100). The first micro-batch pays the compilation (~1.5 min); the first validation
    # compiles its no-grad graphs (not timed). --no_compile: eager.
    compile: bool = True
    # With --compile and without --gradient_checkpointing: the share of activation memory kept for
    # backward (1.0: what the compiler keeps anyway). The compiler recomputes the cheapest ops (norms,
    # activations) first. 0.7 took compiled micro-batch 8 from 45.7 to 34.9 GiB on an H100.
    # It sets torch._functorch.config.activation_memory_budget, a process-wide setting.
    activation_memory_budget: float = 0.7
    num_workers: int = 4  # DataLoader workers (image loading and preprocessing)
    # checkpoints, evaluation, logging
    save_steps: int = 0  # checkpoint every N optimizer steps (0: only at epoch ends)
    save_total_limit: int = 2  # keep the newest N step checkpoints (0: all)
    eval_steps: int = 0  # validation every N optimizer steps (0: at epoch ends)
    eval_batch_size: int = 0  # 0: --batch_size
    # A log line reads the loss back from the GPU (a wait for it); steps in between never do. On an H100
    # one line per step cost nothing measurable: 22.07 samples/s vs 22.10 with one per 10 steps.
    logging_steps: int = 1
    report_to: str = "none"  # none | tensorboard (under output_dir/tensorboard)
    resume: str = ""  # "latest" (bare --resume) or a checkpoint folder
    stop_after_steps: int = 0  # checkpoint and exit after N optimizer steps, as if killed (time-boxed jobs)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):  # a bare `--resume` means `--resume latest`
        if arg == "--resume" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            argv.insert(i + 1, "latest")
            break
    (config,) = HfArgumentParser(TrainConfig).parse_args_into_dataclasses(args=argv)
    if config.views not in ("first", "all"):
        raise InputError(f"--views must be 'first' or 'all', got {config.views!r}")
    if config.report_to not in ("none", "tensorboard"):
        raise InputError(f"--report_to must be 'none' or 'tensorboard', got {config.report_to!r}")
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


def build_model(cfg: TrainConfig, accelerator: Accelerator):
    """Base model (bf16 or 4-bit) + LoRA; vision tower frozen, projector frozen unless --train_projector."""
    from peft import LoraConfig, get_peft_model

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
    # No prepare_model_for_kbit_training under 4-bit: it upcasts every unquantised weight to fp32,
    # which costs speed and memory; bf16 norms/embeddings train fine with bf16 compute.
    lora_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules(cfg.target_modules),
        modules_to_save=["multi_modal_projector"] if cfg.train_projector else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # autocast_adapter_dtype=False: peft would otherwise keep LoRA weights in fp32 on a bf16 model,
    # forcing a cast on every adapted matmul.
    model = get_peft_model(model, lora_config, autocast_adapter_dtype=False)
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


# --------------------------------------------------------------------------- train


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(argv)
    accelerator = Accelerator(
        log_with="tensorboard" if cfg.report_to == "tensorboard" else None, project_dir=cfg.output_dir
    )
    is_main = accelerator.is_main_process
    world = accelerator.num_processes
    output_dir = Path(cfg.output_dir)
    log_path = output_dir / "train_log.jsonl"
    set_seed(cfg.seed)

    # Text side: tokenise every entry once; the workers only load images.
    processor = load_processor(cfg.model_path)
    tokenizer = processor.tokenizer
    per_image = tokens_per_image(AutoConfig.from_pretrained(resolve_model_path(cfg.model_path)))
    train_entries, skipped = checked_entries(cfg.json_file, cfg, accelerator, "training")
    train_set = ReportDataset(
        encode_dataset(train_entries, tokenizer, cfg.image_dir, per_image, cfg.views, cfg.max_length),
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
        print("configuration:\n" + json.dumps(resolved, indent=2))
        print(
            f"effective batch = {cfg.batch_size} (per device) x {cfg.gradient_accumulation_steps} "
            f"(accumulation) x {world} (processes) = {resolved['effective_batch_size']}"
        )
        atomic_write_json(output_dir / "train_config.json", resolved)

    model = build_model(cfg, accelerator)
    optimizer = T.build_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = T.build_scheduler(optimizer, cfg.lr_scheduler, total_steps, cfg.warmup_ratio)
    # The scheduler is stepped by hand once per optimizer step (accelerate would step it per process).
    model, optimizer = accelerator.prepare(model, optimizer)
    dtype = model_dtype(cfg.dtype)

    state = T.TrainState(seed=cfg.seed, skipped_entries=skipped)
    checkpoint = T.resolve_resume(cfg.resume, output_dir)
    if checkpoint is not None:
        state = T.load_checkpoint(checkpoint, model, optimizer, scheduler, accelerator)
        if is_main:
            print(
                f"resumed from {checkpoint}: step {state.step}, epoch {state.epoch}, batch {state.batches_done}"
            )
            T.truncate_log(log_path, state.step)
    elif cfg.resume and is_main:
        print(f"--resume: no checkpoint in {output_dir / 'checkpoints'}; starting from scratch")
    if cfg.report_to == "tensorboard":
        accelerator.init_trackers("tensorboard", config={k: v for k, v in resolved.items() if v is not None})

    def run_eval() -> None:
        if val_set is None:
            return
        batches = eval_batches(
            len(val_set), cfg.eval_batch_size or cfg.batch_size, world, accelerator.process_index
        )
        loader = make_loader(
            val_set, [b for b, _ in batches], collator, cfg, accelerator.device.type == "cuda"
        )
        val_loss = T.evaluate(model, zip(loader, [c for _, c in batches]), accelerator, dtype)
        improved = state.best_val_loss is None or val_loss < state.best_val_loss
        if improved:
            state.best_val_loss = val_loss
            T.save_final_adapter(model, output_dir / "best", accelerator)
        if is_main:
            record = {"type": "eval", "step": state.step, "epoch": epoch_progress(), "val_loss": val_loss}
            append_jsonl(log_path, record)
            accelerator.log({"val_loss": val_loss}, step=state.step)
            tqdm.write(f"step {state.step}: val_loss {val_loss:.4f}" + (" (best)" if improved else ""))

    def epoch_progress() -> float:
        return state.epoch + state.batches_done / max(len(batches), 1)

    def save() -> None:
        T.save_checkpoint(output_dir, model, optimizer, scheduler, state, accelerator, cfg.save_total_limit)

    bar = tqdm(total=total_steps, initial=state.step, disable=not is_main, desc="training", unit="step")
    window = T.StepWindow()  # read (a wait for the GPU) only when a line is logged
    run_start = time.perf_counter() - state.elapsed_s
    last_saved = state.step if checkpoint is not None else -1
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
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
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
                save()
                last_saved = state.step
            if stopping:
                if last_saved != state.step:
                    save()
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
    T.save_final_adapter(model, output_dir / "final", accelerator)
    if is_main:
        print(f"done: {state.step} steps; adapter in {output_dir / 'final'}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
