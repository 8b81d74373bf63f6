"""The pieces of LoRA training: loss, gradient accumulation, optimizer/schedule, clipping, logging.

train_lora.py strings these together (checkpoints: rrg/train/checkpoints.py); the benchmark imports the model
setup, `build_optimizer`, `accumulate_gradients` and `clip_gradients` the same way.

Loss normalisation: every accumulation group's loss is the mean over ALL its label tokens, on all
ranks (the sum of per-token CE divided by the group's global token count). So a group of 64 x 1
samples on one GPU, 8 x 1 x 8 GPUs, or a short last group of an epoch all give the gradient of the
same token-weighted mean, and the last partial group is stepped on with its true size.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from rrg.data.entries import Entry, entry_from_record, resolve_image, verify_image
from rrg.io import InputError, read_json_records
from rrg.train.collate import IGNORE_INDEX, label_positions, select_images
from rrg.train.optim import MasterWeightAdamW

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
    weights = batch.get("label_weights")  # rrg.train.finding_weights: sum(w * CE) and sum(w)
    if weights is not None:
        weights = weights.to(logits.device)[:, positions + 1] * (targets != IGNORE_INDEX)
        per_token = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        )
        return (per_token * weights.reshape(-1)).sum(), weights.sum()
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


def count_label_tokens(batch: dict) -> float:
    """The label tokens of a batch, or their summed weight when it is finding-weighted: what the loss
    sum is divided by (so the weights are renormalised to mean 1 over the group's supervised tokens)."""
    supervised = batch["labels"][:, 1:] != IGNORE_INDEX
    if "label_weights" in batch:
        return float((batch["label_weights"][:, 1:] * supervised).sum())
    return int(supervised.sum())


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
    token count), whatever the group's size. With finding weights (batches carrying "label_weights") both
    sums are weighted: sum(w * CE) / sum(w), the same exactness. Returns the group's GROUP_STATS, summed over all ranks,
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


def uses_master_weights(accelerator) -> bool:
    """Whether this launch keeps fp32 master weights in rrg.train.optim.MasterWeightAdamW.

    Not under DeepSpeed, whose ZeRO optimizer keeps fp32 masters itself (bf16 in its config), nor under
    FSDP, which flattens and shards the parameters after the optimizer is built: there the LoRA weights
    are updated in their own dtype (train_lora.py warns)."""
    return accelerator is None or accelerator.distributed_type.name not in ("DEEPSPEED", "FSDP", "XLA")


PROJECTOR = "multi_modal_projector"


def build_optimizer(
    model, lr: float, weight_decay: float, accelerator=None, projector_lr: float | None = None
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and norms (1-D tensors).

    projector_lr: the trained projector's own rate (LLaVA-Rad trains it faster than LoRA); the
    schedule scales every group's rate alike, so the ratio holds through warm-up and decay.

    Trainable parameters below fp32 (bf16 LoRA on a GPU) get fp32 master weights (rrg.train.optim; not under
    DeepSpeed/FSDP, see uses_master_weights); fp32 ones (CPU runs) a plain AdamW, which is the same thing.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in named]
    groups = []
    for is_projector in (False, True):
        params = [p for n, p in named if (PROJECTOR in n) == is_projector]
        rate = {"lr": projector_lr} if is_projector and projector_lr else {}
        groups += [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, **rate},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **rate},
        ]
    groups = [g for g in groups if g["params"]]
    fused = all(p.is_cuda for p in trainable)  # one kernel for all parameters on GPU
    kwargs = {"lr": lr, "betas": (0.9, 0.999), "fused": fused or None}
    if uses_master_weights(accelerator) and any(p.dtype != torch.float32 for p in trainable):
        return MasterWeightAdamW(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def unwrap_optimizer(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's AcceleratedOptimizer (or the optimizer itself)."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def size_deepspeed_batch(accelerator, micro_batch: int) -> None:
    """Tell DeepSpeed the per-GPU micro-batch (no-op without DeepSpeed).

    accelerate reads it from a DataLoader passed to prepare(); ours are built per epoch and never
    prepared, and without it prepare() stopped with a ValueError on 4 GPUs (ZeRO-2, 2026-11-27). The
    accumulation stays DeepSpeed's 1: train_lora.py marks the boundaries itself (gradient_sync).
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch


def clip_gradients(accelerator, model, optimizer, max_norm: float) -> torch.Tensor | None:
    """Clip the gradients the optimizer steps with (<= 0: no clipping); their norm before clipping.

    With master weights those are the fp32 copies (synced here from the model's); otherwise the model's.
    The norm stays on the device (reading it waits for the GPU). None under DeepSpeed, which clips
    inside its own step.
    """
    max_norm = max_norm if max_norm > 0 else float("inf")
    inner = unwrap_optimizer(optimizer)
    if isinstance(inner, MasterWeightAdamW):
        inner.sync_grads()
        return accelerator.clip_grad_norm_(inner.masters, max_norm)
    return accelerator.clip_grad_norm_(model.parameters(), max_norm)


def steps_per_epoch(micro_batches_per_rank: int, grad_accum: int) -> int:
    """Optimizer steps in one epoch: the last, partial accumulation group counts as a step."""
    return math.ceil(micro_batches_per_rank / grad_accum)


def build_scheduler(optimizer, name: str, total_steps: int, warmup_ratio: float):
    from transformers import get_scheduler

    warmup = math.ceil(warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


# --------------------------------------------------------------------------- pre-flight check


def preflight_entries(
    json_file: str | os.PathLike, image_dir: str | os.PathLike, views: str = "first", workers: int = 8
) -> tuple[list[Entry], list[str]]:
    """Read every entry of a split file and check its images exist and decode.

    Returns (good entries, problems), each problem naming the file and JSON line/entry. Unlike
    load_entries, it does not stop at the first bad entry, so one run lists them all.
    """
    path = Path(json_file)
    is_array = path.is_file() and path.read_text(encoding="utf-8", errors="replace").lstrip().startswith("[")
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
        if not entry.response.strip():  # a split may lack reports (own images, eval only): not for training
            problems.append(f"{where}: no report (field 'response') to train on")
            continue
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


# --------------------------------------------------------------------------- logging


class TrainingDiverged(InputError):
    """A non-finite loss, gradient norm or weight: the run stops (one line, the step, the last good checkpoint)."""


@torch.no_grad()
def weights_finite(model, accelerator) -> bool:
    """Whether every trainable weight is finite on every rank (all ranks get the same answer). Waits for
    the GPU: called before saving an adapter or checkpoint, which waits anyway."""
    params = [p for p in model.parameters() if p.requires_grad and p.numel() > 0]
    bad = torch.zeros((), dtype=torch.float32, device=accelerator.device)
    if params:
        bad += torch.stack([(~torch.isfinite(p)).any() for p in params]).sum().to(bad.device, torch.float32)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return bool(bad == 0)


class StepWindow:
    """The optimizer steps since the last log line; their stats stay on the device until `read`.

    Reading a number from the GPU waits for all the work queued before it, so only `read` and
    `first_nonfinite` do it. Each step's stats are kept (a few numbers), so a reading also names the
    first step of the window whose loss or gradient norm was not finite.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.steps: list[torch.Tensor] = []  # per step: GROUP_STATS, then the grad norm (NaN if none)
        self.has_norm: list[bool] = []

    def add(self, stats: torch.Tensor, grad_norm: torch.Tensor | float | None) -> None:
        if isinstance(grad_norm, torch.Tensor):
            norm = grad_norm.detach().to(stats.device, torch.float64).reshape(1)
        else:  # made on the device: a copy from pageable host memory would wait for the GPU
            value = float("nan") if grad_norm is None else grad_norm
            norm = torch.full((1,), value, dtype=torch.float64, device=stats.device)
        self.steps.append(torch.cat([stats.double(), norm]))
        self.has_norm.append(grad_norm is not None)  # None: accelerate under DeepSpeed, which clips itself

    def rows(self) -> list[list[float]]:
        """The window's per-step numbers (waits for the GPU)."""
        return torch.stack(self.steps).tolist() if self.steps else []

    def first_nonfinite(self, rows: list[list[float]] | None = None) -> int | None:
        """Index (0-based, in this window) of the first step with a non-finite loss or grad norm; None if none."""
        for i, row in enumerate(self.rows() if rows is None else rows):
            if not math.isfinite(row[0]) or (self.has_norm[i] and not math.isfinite(row[-1])):
                return i
        return None

    def read(self) -> dict[str, float]:
        """Sums (samples, tokens), means (loss, grad_norm) and rates since the last read; starts a new window.

        Also `steps` (how many) and `first_nonfinite` (see there)."""
        rows = self.rows()
        totals = [sum(column) for column in zip(*rows)] if rows else [0.0] * (len(GROUP_STATS) + 1)
        values = read_stats(torch.tensor(totals[: len(GROUP_STATS)], dtype=torch.float64))
        norms = [row[-1] for row, has in zip(rows, self.has_norm) if has]
        values["grad_norm"] = sum(norms) / len(norms) if norms else float("nan")
        values["steps"] = len(rows)
        values["first_nonfinite"] = self.first_nonfinite(rows)
        seconds = max(time.perf_counter() - self.start, 1e-9)  # after the wait above: the GPU's time too
        values["samples_per_s"] = values["samples"] / seconds
        values["tokens_per_s"] = values["tokens"] / seconds
        self.reset()
        return values
