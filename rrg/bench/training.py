"""Our training measured: specs, step timeline, loader timings."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
import rrg.train.settings
import rrg.train.setup
from rrg.bench.measure import gpu_time_split, param_counts, peak_gib, timed, training_flops
from rrg.bench.settings import H100_BF16_DENSE_FLOPS, BenchConfig
from rrg.bench.specs import GenSpec, TrainSpec
from rrg.data.entries import resolve_image
from rrg.generate.batch import study_loader
from rrg.model.kernels.float8 import float8_problem
from rrg.train import align
from rrg.train import step as T
from rrg.train.collate import length_grouped_batches


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def our_training(
    model_dir: Path, dataset, collator, cfg: BenchConfig, spec: TrainSpec, load_in_4bit=False
) -> dict:
    """train_lora.py's model setup and accumulation step, timed over cfg.train_samples samples."""
    from accelerate import Accelerator

    recipe = rrg.train.settings.TrainConfig(
        model_path=str(model_dir),
        load_in_4bit=load_in_4bit,
        gradient_checkpointing=spec.checkpointing,
        compile=spec.compile,
        activation_memory_budget=spec.budget,
        batch_size=spec.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum,
        num_workers=cfg.num_workers,
        fp8=spec.fp8,
        target_modules=spec.target_modules(),
        train_projector=spec.train_projector,
        projector_lr=spec.projector_lr,
        finding_weight=spec.finding_weight,
        stage="align" if spec.align_stage else "lora",
        lr=align.DEFAULTS["lr"] if spec.align_stage else rrg.train.settings.TrainConfig.lr,
    )
    weighted = dataset.samples[0].weights is not None
    if weighted != (spec.finding_weight != 1):  # a weighted row must never time an unweighted loss
        raise ValueError(f"{spec.label()}: the dataset is {'' if weighted else 'not '}finding-weighted")
    torch._dynamo.reset()  # a graph compiled under another configuration must not be reused
    accelerator = Accelerator()
    set_seed(recipe.seed)  # as train_lora.py: every configuration starts from the same LoRA init
    model = rrg.train.setup.build_model(recipe, accelerator)
    optimizer = T.build_optimizer(  # fp32 masters
        model, recipe.lr, recipe.weight_decay, accelerator, recipe.projector_lr or None
    )
    if spec.plain_adamw:
        optimizer = torch.optim.AdamW(
            optimizer.model_params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True
        )
    model, optimizer = accelerator.prepare(model, optimizer)
    dtype = torch.bfloat16
    batches = length_grouped_batches(dataset.lengths(), spec.micro_batch, 1, 0, seed=0, epoch=0)
    loader = iter(rrg.train.setup.make_loader(dataset, batches, collator, recipe, pin_memory=True))
    warmup_groups = 2
    timed_groups = max(1, cfg.train_samples // (spec.micro_batch * cfg.grad_accum))
    needed = (warmup_groups + timed_groups + (2 if cfg.train_profile else 0)) * cfg.grad_accum

    window, steps = T.StepWindow(), 0

    def group_step() -> torch.Tensor:
        nonlocal steps
        group = [next(loader) for _ in range(cfg.grad_accum)]
        stats = T.accumulate_gradients(model, group, accelerator, dtype)
        grad_norm = T.clip_gradients(accelerator, model, optimizer, 1.0)  # the fp32 master gradients
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.add(stats, grad_norm)
        steps += 1
        if steps % spec.log_every == 0:  # train_lora.py's log line: reading it waits for the GPU
            window.read()
        return stats

    result = {
        "config": asdict(spec),
        "micro_batch": spec.micro_batch,
        "gradient_checkpointing": spec.checkpointing,
        # The same for every configuration of this micro-batch in this run: the same samples, in order.
        "sample_order_sha256": hashlib.sha256(json.dumps(batches).encode()).hexdigest(),
    }
    try:
        if needed > len(batches):
            raise ValueError(
                f"{needed} micro-batches of {spec.micro_batch} needed, the sample pool holds {len(batches)}: "
                "lower --train_samples"
            )
        with timed() as warm:
            warmup = [T.read_stats(group_step()) for _ in range(warmup_groups)]
        losses = [stats["loss"] for stats in warmup]  # one per optimizer step from the first
        graphs = compiled_graphs()
        torch.cuda.reset_peak_memory_stats()
        totals = {"samples": 0, "tokens": 0, "label_tokens": 0}
        with timed() as t:
            group_stats = [group_step() for _ in range(timed_groups)]  # read after the timed loop
        for stats in map(T.read_stats, group_stats):
            losses.append(stats["loss"])
            for key in totals:
                totals[key] += int(stats[key])
        result |= {
            "samples_per_s": totals["samples"] / t["s"],
            "real_tokens_per_s": totals["tokens"] / t["s"],
            "peak_gib": peak_gib(),
            "samples": totals["samples"],
            "warmup_s": warm["s"],  # compilation included
            "warmup_steps": warmup_groups,
            "warmup_samples": int(sum(stats["samples"] for stats in warmup)),
            "graphs_compiled": graphs,
            "graphs_compiled_while_timed": compiled_graphs() - graphs,  # 0: no recompilation in the window
            "losses": losses,
        }
        flops = training_flops(
            param_counts(model), totals["tokens"], totals["label_tokens"], totals["samples"], 577
        )
        result["mfu"] = flops / t["s"] / H100_BF16_DENSE_FLOPS
        if cfg.train_profile:  # where a group's GPU time goes, per sample; wall time beside it
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with timed() as wall, torch.profiler.profile(activities=activities) as prof:
                stats = [group_step() for _ in range(2)]
            samples = sum(T.read_stats(s)["samples"] for s in stats)
            result["profile"] = {"wall_ms": 1000 * wall["s"] / samples} | gpu_time_split(prof, samples)
            if cfg.trace_dir:
                trace = Path(cfg.trace_dir) / f"train-{spec.label().replace(' ', '-')}.json.gz"
                trace.parent.mkdir(parents=True, exist_ok=True)
                prof.export_chrome_trace(str(trace))  # gzipped: the profiler reads the suffix
            print(result["profile"].pop("top_kernels"), flush=True)
    except Exception as e:  # out of memory, a compile failure: record it and go on with the sweep
        result["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    print(("QLoRA " if load_in_4bit else "LoRA ") + spec.label() + ":", json.dumps(result), flush=True)
    return result  # the caller frees the GPU once these locals are gone


@contextmanager
def batch_timeline():
    """(start, end) of each generate call the eval loop makes inside this block.

    The calls return decoded text, so each end is after the GPU finished its batch; the time outside
    the calls is the loop's own (waiting for the next batch, writing lines).
    """
    original = rrg.generate.batch.generate_from_inputs
    calls: list[tuple[float, float]] = []

    def recorded(*args, **kwargs):
        start = time.perf_counter()
        texts = original(*args, **kwargs)
        calls.append((start, time.perf_counter()))
        return texts

    rrg.generate.batch.generate_from_inputs = recorded  # generate_predictions looks it up at each call
    try:
        yield calls
    finally:
        rrg.generate.batch.generate_from_inputs = original


def timeline_summary(calls: list[tuple[float, float]], start: float, end: float) -> dict:
    """How a timed eval run splits: before the first batch, inside generate, between batches, after."""
    inside = [b - a for a, b in calls]
    between = [calls[i + 1][0] - calls[i][1] for i in range(len(calls) - 1)]
    return {
        "batches": len(calls),
        "before_first_batch_s": calls[0][0] - start,  # worker start, the first batch's preprocessing
        "generate_s_per_batch": float(np.mean(inside)),
        "between_batches_s": float(np.mean(between)) if between else 0.0,
        "after_last_batch_s": end - calls[-1][1],
    }


def eval_loader_timings(entries, image_dir: Path, image_processor, cfg: BenchConfig) -> list[dict]:
    """The eval loader alone, for each of cfg.loader_workers, batches of the first generation setting."""
    items = [(e, e.images) for e in entries[: cfg.gen_reports]]
    paths = {e.images[0]: resolve_image(image_dir, e.images[0]) for e in entries}
    batch_size = GenSpec.parse(cfg.gen_configs.split(",")[0], cfg.gen_workers).batch_size
    rows = []
    for workers in [int(w) for w in cfg.loader_workers.split(",") if w]:
        rows.append(loader_timing(items, paths, image_processor, batch_size, workers))
        print("eval loader:", json.dumps(rows[-1]), flush=True)
    return rows


def loader_timing(items, paths, image_processor, batch_size: int, workers: int) -> dict:
    """The eval loader alone (no GPU work): time to its first batch, and studies/s over all items."""
    loader = study_loader(items, paths, image_processor, batch_size, workers, torch.device("cuda"))
    start = time.perf_counter()
    first = None
    for i, (_, _, pixels) in enumerate(loader, 1):
        if isinstance(pixels, str):
            raise RuntimeError(pixels)
        if i == batch_size:
            first = time.perf_counter() - start
    return {
        "workers": workers,
        "first_batch_s": first,
        "studies_per_s": len(items) / (time.perf_counter() - start),
    }


def training_specs(cfg: BenchConfig, phases: set[str]) -> dict[str, list[TrainSpec]]:
    """The training configurations of the chosen phases ("lora", "qlora"), checked: exits with one line on
    an unknown option, fp8 without compile or with 4 bits, or fp8 where it cannot run."""
    specs = {}
    try:
        for phase, text in (("lora", cfg.train_configs), ("qlora", cfg.qlora_configs)):
            if phase in phases:
                specs[phase] = [TrainSpec.parse(t) for t in text.split(",")]
    except ValueError as e:
        sys.exit(f"error: {e}")
    if any(s.fp8 for s in specs.get("qlora", [])):
        sys.exit("error: --qlora_configs: fp8 computes with bf16 base weights, not 4-bit ones")
    if any(s.fp8 for rows in specs.values() for s in rows) and (
        problem := float8_problem("cuda", flag="--train_configs fp8")
    ):
        sys.exit(f"error: {problem}")
    if cfg.curve_steps < 1:
        sys.exit(f"error: --curve_steps {cfg.curve_steps}: at least 1")
    return specs
