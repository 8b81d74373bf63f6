"""The pieces of LoRA training: loss, gradient accumulation, optimizer/schedule, checkpoints, logging.

train_lora.py strings these together; the benchmark imports `compute_loss` and `training_step`.

Loss normalisation: every accumulation group's loss is the mean over ALL its label tokens, on all
ranks (the sum of per-token CE divided by the group's global token count). So a group of 64 x 1
samples on one GPU, 8 x 1 x 8 GPUs, or a short last group of an epoch all give the gradient of the
same token-weighted mean, and the last partial group is stepped on with its true size.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .collate import IGNORE_INDEX, label_positions, select_images
from .entries import Entry, entry_from_record, resolve_image
from .io import InputError, atomic_write_json, read_json_records, read_jsonl, replace_dir

# --------------------------------------------------------------------------- loss


def compute_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over the label tokens, and their count.

    Logits are computed only at the positions that predict a label (`logits_to_keep`): the report is
    ~100 tokens of a ~700-token sample, and a full [B, T, 32001] logit tensor would cost more memory
    than the rest of the step. The CE runs in fp32 on those logits. Going through the model's own
    forward (rather than its inner LlavaModel) keeps DDP/FSDP/DeepSpeed wrappers in the loop.

    No padding mask is passed. The Collator pads on the right, so under causal attention a real token
    never sees a pad (every pad comes after it), and logits at pads are never scored: the loss is the
    same. What changes is the kernel: without a mask SDPA takes its flash kernel, causal and on the
    8 key/value heads as they are; with one, transformers copies each key/value head 4 times for a
    masked kernel (eager micro-batch 8 on an H100: 54.4 -> 51.7 GiB without it, same speed).
    """
    labels = batch["labels"]
    positions = batch.get("logit_positions")  # the Collator's, computed on the CPU
    if positions is None:
        positions = label_positions(labels)
    positions = positions.to(labels.device)
    outputs = model(
        input_ids=batch["input_ids"],
        attention_mask=None,  # right padding: see above
        pixel_values=batch["pixel_values"],
        logits_to_keep=positions,
        use_cache=False,
    )
    logits = outputs.logits.float()  # [B, K, V]
    targets = labels[:, positions + 1]  # [B, K]
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


def count_label_tokens(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def training_step(model, batch: dict, loss_scale: float | torch.Tensor, backward=None) -> torch.Tensor:
    """Forward + backward of one micro-batch; the loss sum is multiplied by loss_scale before backward.

    `backward` is accelerator.backward under accelerate (plain .backward() otherwise). Returns the
    detached, unscaled loss sum, for logging.
    """
    loss_sum, _ = compute_loss(model, batch)
    scaled = loss_sum * loss_scale
    if backward is None:
        scaled.backward()
    else:
        backward(scaled)
    return loss_sum.detach()


def compile_decoder_layers(model, dynamic: bool | None = True) -> int:
    """torch.compile every decoder layer of the language model in place (regional compilation).

    All layers share the compiled code (same module code, parameters passed as inputs), so the first
    batch pays the compilation of one layer, not of the whole 7B model. Inductor fuses what eager
    PyTorch runs as separate memory-bound kernels: RMSNorm's fp32 round trip, rotary embeddings,
    SiLU x up, LoRA's scale-and-add. Sequence lengths vary from batch to batch, so shapes are
    symbolic from the start (dynamic=True): one graph serves every length. Training compiles two (the
    first layer's input needs no gradient, the others' do). Returns the number of layers compiled.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = base.get_decoder().layers
    for layer in layers:
        layer.compile(dynamic=dynamic)
    return len(layers)


def move_to(batch: dict, device: torch.device, dtype: torch.dtype | None = None) -> dict:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if dtype is not None:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


@contextlib.contextmanager
def gradient_sync(accelerator, model, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a group.

    `sync_gradients` also tells DeepSpeed (through accelerate) where the accumulation boundary is,
    so it steps only on the last micro-batch, including a short last group of an epoch.
    """
    accelerator.gradient_state._set_sync_gradients(sync)
    try:
        if sync:
            yield
        else:
            with accelerator.no_sync(model):
                yield
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


GROUP_STATS = ("loss_sum", "label_tokens", "tokens", "samples")  # accumulate_gradients' tensor, in order


def accumulate_gradients(
    model, batches: Sequence[dict], accelerator, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Forward/backward every micro-batch of one accumulation group (this rank's share).

    Gradients end up as those of (sum of label-token CE over the group on all ranks) / (global label
    token count), whatever the group's size. Returns the group's GROUP_STATS, summed over all ranks,
    as one float64 tensor on the device (read it with `read_stats`).

    Nothing here waits for the GPU: the token counts come from the CPU batches, the loss scale and the
    stats stay on the device, so the CPU can queue the next micro-batches while the GPU runs this one.
    The caller decides when to wait, by reading the stats (train_lora.py: at each log line).
    """
    counts = [
        sum(count_label_tokens(b) for b in batches),
        sum(int(b["attention_mask"].sum()) for b in batches),
        sum(len(b["input_ids"]) for b in batches),
    ]
    # A blocking copy to the GPU waits for the work queued before it; a non-blocking one, from pinned memory, does not.
    pinned = accelerator.device.type == "cuda"
    counts = torch.tensor(counts, dtype=torch.float64, pin_memory=pinned).to(
        accelerator.device, non_blocking=True
    )
    counts = accelerator.reduce(counts, reduction="sum")
    # DDP/FSDP/DeepSpeed average gradients over ranks; multiplying by world size turns that into a sum.
    loss_scale = (accelerator.num_processes / counts[0].clamp(min=1)).float()
    loss_sum = torch.zeros((), dtype=torch.float32, device=accelerator.device)
    for i, batch in enumerate(batches):
        with gradient_sync(accelerator, model, sync=i == len(batches) - 1):
            batch = move_to(batch, accelerator.device, dtype)
            loss_sum += training_step(model, batch, loss_scale, backward=accelerator.backward)
    loss_sum = accelerator.reduce(loss_sum, reduction="sum")
    return torch.cat([loss_sum.double().reshape(1), counts])


def read_stats(stats: torch.Tensor) -> dict[str, float]:
    """GROUP_STATS of accumulate_gradients' tensor (or a sum of them) as numbers, with their token-weighted
    mean loss. Waits for the GPU."""
    values = dict(zip(GROUP_STATS, stats.tolist()))
    values["loss"] = values["loss_sum"] / max(values["label_tokens"], 1.0)
    return values


@torch.no_grad()
def evaluate(
    model, batches: Iterable[tuple[dict, bool]], accelerator, dtype: torch.dtype | None = None
) -> float:
    """Token-weighted mean validation loss over all ranks; padding batches (counts=False) are run, not counted."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch, counts in batches:
        loss_sum, n = compute_loss(model, move_to(batch, accelerator.device, dtype))
        if counts:
            totals += torch.stack([loss_sum.double(), n.double()])
    totals = accelerator.reduce(totals, reduction="sum")
    model.train(was_training)
    return float(totals[0] / totals[1].clamp(min=1))


# --------------------------------------------------------------------------- optimizer and schedule


def build_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and norms (1-D tensors)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = all(p.is_cuda for p in trainable)  # one kernel for all parameters on GPU
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused or None)


def steps_per_epoch(micro_batches_per_rank: int, grad_accum: int) -> int:
    """Optimizer steps in one epoch: the last, partial accumulation group counts as a step."""
    return math.ceil(micro_batches_per_rank / grad_accum)


def build_scheduler(optimizer, name: str, total_steps: int, warmup_ratio: float):
    from transformers import get_scheduler

    warmup = math.ceil(warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


# --------------------------------------------------------------------------- pre-flight check


def verify_image(path: Path) -> str | None:
    """None if PIL can open and verify the file, else why not."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
        return f"unreadable image {str(path)!r} ({type(e).__name__}: {e})"
    return None


def preflight_entries(
    json_file: str | os.PathLike, image_dir: str | os.PathLike, views: str = "first", workers: int = 8
) -> tuple[list[Entry], list[str]]:
    """Read every entry of a split file and check its images exist and decode.

    Returns (good entries, problems), each problem naming the file and JSON line/entry. Unlike
    load_entries, it does not stop at the first bad entry, so one run lists them all.
    """
    path = Path(json_file)
    is_array = path.exists() and path.read_text(encoding="utf-8", errors="replace").lstrip().startswith("[")
    entries: list[Entry] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for position, record in read_json_records(path):
        where = f"{path}: entry {position}" if is_array else f"{path}:{position}"
        try:
            entry = entry_from_record(record, where, position)
        except InputError as e:
            problems.append(str(e))
            continue
        if entry.id in seen:
            problems.append(f"{where}: duplicate id {entry.id!r} (first at {seen[entry.id]})")
            continue
        seen[entry.id] = where
        entries.append(entry)

    def check(entry: Entry) -> str | None:
        for name in select_images(entry, views):
            try:
                image_path = resolve_image(image_dir, name)
            except InputError as e:
                return f"{entry.source}: {e}"
            reason = verify_image(image_path)
            if reason:
                return f"{entry.source}: {reason}"
        return None

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(check, entries), total=len(entries), desc=f"checking {path.name}"))
    good = [e for e, problem in zip(entries, results) if problem is None]
    problems += [p for p in results if p is not None]
    return good, problems


# --------------------------------------------------------------------------- checkpoints


@dataclass
class TrainState:
    """Where training stands; saved as state.json in each checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batches_done: int = 0  # micro-batches of this epoch consumed by each rank
    seed: int = 0  # the sampler's seed: epoch e's order is a function of (seed, e)
    best_val_loss: float | None = None
    elapsed_s: float = 0.0
    samples_seen: int = 0
    skipped_entries: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> TrainState:
        return cls(**record)


CHECKPOINT_RE = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (state.json written last), oldest first."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT_RE.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path | None:
    """`--resume latest` -> newest complete checkpoint in output_dir (None if there is none); a path -> it."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise InputError(f"{path}: not a checkpoint folder (no state.json)")
    return path


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),  # (version, 625 ints, gauss): stored as plain lists
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        # numpy's state holds an ndarray, which weights_only loading refuses: store it as a list.
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def optimizer_is_sharded(accelerator) -> bool:
    """ZeRO and FSDP keep a different optimizer shard on each rank: each rank saves its own."""
    return accelerator.distributed_type.name in ("DEEPSPEED", "FSDP")


def save_adapter(model, out_dir: str | os.PathLike, accelerator) -> None:
    """Write a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) from the main rank."""
    state_dict = accelerator.get_state_dict(model)  # gathers FSDP/ZeRO-3 shards; a no-op for DDP
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(str(out_dir), state_dict=state_dict)


def save_final_adapter(model, out_dir: str | os.PathLike, accelerator) -> None:
    """Write an adapter folder atomically (tmp folder, then rename over the old one)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    save_adapter(model, tmp, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, out_dir)
    accelerator.wait_for_everyone()


def save_checkpoint(
    output_dir: str | os.PathLike, model, optimizer, scheduler, state: TrainState, accelerator, keep: int = 0
) -> Path:
    """checkpoints/step-XXXXXX/: adapter, optimizer.pt, scheduler.pt, rng.pt, state.json; written atomically.

    Everything goes to a hidden tmp folder first, which is renamed into place once complete, so a run
    killed mid-save leaves the previous checkpoint intact. keep > 0 deletes all but the newest `keep`.
    """
    final = Path(output_dir) / "checkpoints" / checkpoint_name(state.step)
    tmp = final.with_name(f".{final.name}.tmp")
    rank = accelerator.process_index
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_adapter(model, tmp, accelerator)
    if optimizer_is_sharded(accelerator):
        torch.save(optimizer.state_dict(), tmp / f"optimizer-rank{rank}.pt")
    elif accelerator.is_main_process:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt"))
    if accelerator.is_main_process:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / "state.json", state.to_json())  # last: marks the checkpoint complete
        replace_dir(tmp, final)
        if keep > 0:
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler, accelerator) -> TrainState:
    """Restore adapter weights, optimizer, scheduler and RNG states; return the saved TrainState."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    rank = accelerator.process_index
    weights = load_file(str(path / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(accelerator.unwrap_model(model), weights)
    if getattr(result, "unexpected_keys", None):
        raise InputError(f"{path}: adapter weights do not fit this model: {result.unexpected_keys[:3]}")
    opt_file = path / (f"optimizer-rank{rank}.pt" if optimizer_is_sharded(accelerator) else "optimizer.pt")
    optimizer.load_state_dict(torch.load(opt_file, map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt")
    if rng_file.exists():  # resuming on a different number of ranks: the new ranks start fresh
        set_rng_state(torch.load(rng_file, weights_only=True))
    return TrainState.from_json(json.loads((path / "state.json").read_text()))


# --------------------------------------------------------------------------- logging


def truncate_log(log_path: str | os.PathLike, step: int) -> None:
    """On resume, drop log lines past the checkpoint's step (the killed run logged them; they rerun)."""
    log_path = Path(log_path)
    if not log_path.exists():
        return
    records = [r for r in read_jsonl(log_path, allow_partial_last_line=True) if r.get("step", 0) <= step]
    from .io import atomic_write_text

    atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in records))


class StepWindow:
    """The optimizer steps since the last log line; their stats stay on the device until `read`.

    Reading a number from the GPU waits for all the work queued before it, so only `read` does it.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.stats: torch.Tensor | None = None
        self.grad_norms: list[torch.Tensor] = []

    def add(self, stats: torch.Tensor, grad_norm: torch.Tensor | float | None) -> None:
        self.stats = stats if self.stats is None else self.stats + stats
        if grad_norm is not None:  # None: accelerate under DeepSpeed, which clips inside its own step
            self.grad_norms.append(torch.as_tensor(grad_norm, dtype=torch.float64, device=stats.device))

    def read(self) -> dict[str, float]:
        """Sums (samples, tokens), means (loss, grad_norm) and rates since the last read; starts a new window."""
        values = read_stats(self.stats if self.stats is not None else torch.zeros(len(GROUP_STATS)))
        values["grad_norm"] = float(torch.stack(self.grad_norms).mean()) if self.grad_norms else float("nan")
        seconds = max(time.perf_counter() - self.start, 1e-9)  # after the wait above: the GPU's time too
        values["samples_per_s"] = values["samples"] / seconds
        values["tokens_per_s"] = values["tokens"] / seconds
        self.reset()
        return values
