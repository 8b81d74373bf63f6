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
--stage align trains the projector alone (rrg.train.align): final/, best/ and the checkpoints then hold
projector.safetensors + projector.json instead of an adapter; --projector_from FOLDER starts a LoRA run from it.
A non-finite loss, gradient norm or weight stops training with the step and the last good checkpoint.
Adapters are PEFT folders: rrg.model.load.load_adapter(model, "lora_weight/final") or PeftModel.from_pretrained.
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
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

# Batches of varying length near the memory limit fragment PyTorch's caching allocator; every
# cudaFree it then needs stalls the GPU (measured on an H100: 10.2 -> 11.8 samples/s at micro-batch 8).
# Expandable segments avoid that. Set before torch initialises CUDA; a user's own setting wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import AutoConfig  # noqa: E402

from rrg.cli import exits_on_input_error  # noqa: E402
from rrg.io import append_jsonl, atomic_write_json, disk_full_is_one_line  # noqa: E402
from rrg.lock import output_lock  # noqa: E402
from rrg.model.load import load_processor, resolve_model_path  # noqa: E402
from rrg.model.processor import image_token_id, tokens_per_image  # noqa: E402
from rrg.ranks import main_process_decides  # noqa: E402
from rrg.train import (  # noqa: E402
    align,  # noqa: E402
    settings,
    setup,
)
from rrg.train import checkpoints as C  # noqa: E402
from rrg.train import step as T  # noqa: E402
from rrg.train.collate import Collator, ReportDataset, encode_dataset, eval_batches, length_grouped_batches  # noqa: E402
from rrg.train.fingerprint import run_fingerprint  # noqa: E402
from rrg.train.optim import MasterWeightAdamW  # noqa: E402
from rrg.train.settings import TrainConfig  # noqa: E402

# --------------------------------------------------------------------------- train


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    cfg = settings.parse_config(argv)
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
    setup.check_fp8(cfg, accelerator)  # before anything is read or written
    fingerprint = run_fingerprint(cfg, accelerator)
    resume_from = main_process_decides(accelerator, lambda: setup.prepare_output_dir(cfg, fingerprint))
    set_seed(cfg.seed)

    # Text side: tokenise every entry once; the workers only load images.
    processor = load_processor(cfg.model_path)
    tokenizer = processor.tokenizer
    per_image = tokens_per_image(AutoConfig.from_pretrained(resolve_model_path(cfg.model_path)))
    train_entries, skipped = setup.checked_entries(cfg.json_file, cfg, accelerator, "training")
    train_set = ReportDataset(
        encode_dataset(
            train_entries, tokenizer, cfg.image_dir, per_image, cfg.views, cfg.max_length, cfg.finding_weight
        ),
        processor.image_processor,
    )
    val_set = None
    if cfg.val_json:
        val_entries, _ = setup.checked_entries(cfg.val_json, cfg, accelerator, "validation")
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

    model = setup.build_model(cfg, accelerator)
    if cfg.stage == "align":
        model.provenance["run_fingerprint"] = fingerprint["digest"]
    optimizer = T.build_optimizer(model, cfg.lr, cfg.weight_decay, accelerator, cfg.projector_lr or None)
    masters = isinstance(optimizer, MasterWeightAdamW)
    low_precision = any(p.dtype != torch.float32 for p in model.parameters() if p.requires_grad)
    if is_main and low_precision and not masters and accelerator.distributed_type.name != "DEEPSPEED":
        print(  # DeepSpeed keeps fp32 masters itself (bf16 in its config); FSDP does not
            f"warning: under {accelerator.distributed_type.name} the LoRA weights are updated in "
            f"{setup.model_dtype(cfg.dtype)} without fp32 master weights; small updates may round away"
        )
    scheduler = T.build_scheduler(optimizer, cfg.lr_scheduler, total_steps, cfg.warmup_ratio)
    # The scheduler is stepped by hand once per optimizer step (accelerate would step it per process).
    T.size_deepspeed_batch(accelerator, cfg.batch_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    dtype = setup.model_dtype(cfg.dtype)

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
        loader = setup.make_loader(
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
            setup.make_loader(
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
