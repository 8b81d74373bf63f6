"""The reference recipe (LLaVA's training and generation) and how our curves compare with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.bench.measure import param_counts, peak_gib, timed, training_flops
from rrg.bench.settings import DECODER_PROJECTIONS, H100_BF16_DENSE_FLOPS, BenchConfig
from rrg.bench.specs import TrainSpec, gen_label, row_label, train_flags
from rrg.model.load import load_processor
from rrg.model.prompts import render_prompt, report_question
from rrg.report.curves import relative_differences

REFERENCE_NAMES = list(DECODER_PROJECTIONS)  # the reference matched these names everywhere (CLIP too)


def reference_training(model_dir: Path, samples, cfg: BenchConfig, pad_id: int) -> dict:
    """bs 1, padded to 2,048, no attention mask, fp16 + autocast + GradScaler, fp32 LoRA everywhere."""
    from peft import LoraConfig, get_peft_model

    model = LlavaForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float16, attn_implementation="eager", device_map={"": 0}
    )
    model.requires_grad_(False)
    lora = LoraConfig(
        r=64, lora_alpha=128, lora_dropout=0.05, target_modules=REFERENCE_NAMES, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)  # peft's default: fp32 adapter weights
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    scaler = torch.amp.GradScaler("cuda")
    processor = load_processor(str(model_dir))
    pixel_cache = {}

    def step(sample, i: int) -> None:
        ids = torch.full((1, 2048), pad_id, dtype=torch.long)
        labels = torch.full((1, 2048), -100, dtype=torch.long)
        ids[0, : len(sample)] = torch.tensor(sample.input_ids)
        labels[0, : len(sample)] = torch.tensor(sample.labels)
        path = sample.image_paths[0]
        if path not in pixel_cache:
            pixel_cache[path] = processor.image_processor(
                images=[Image.open(path).convert("RGB")], return_tensors="pt"
            )["pixel_values"]
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(
                input_ids=ids.cuda(), pixel_values=pixel_cache[path].cuda().half(), labels=labels.cuda()
            )
        scaler.scale(out.loss / cfg.grad_accum).backward()
        if (i + 1) % cfg.grad_accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()

    warmup = 2
    for i, sample in enumerate(samples[:warmup]):
        step(sample, i)
    torch.cuda.reset_peak_memory_stats()
    timed_samples = samples[warmup : warmup + cfg.reference_samples]
    with timed() as t:
        for i, sample in enumerate(timed_samples):
            step(sample, i)
    n = len(timed_samples)
    tokens = sum(len(s) for s in timed_samples)
    result = {
        "samples_per_s": n / t["s"],
        "real_tokens_per_s": tokens / t["s"],
        "padded_tokens_per_s": 2048 * n / t["s"],
        "peak_gib": peak_gib(),
        "samples": n,
    }
    # The reference computes all 2,048 positions, logits included: its MFU counts padding as work.
    flops = training_flops(param_counts(model), 2048 * n, 2048 * n, n, 577)
    result["mfu_padded"] = flops / t["s"] / H100_BF16_DENSE_FLOPS
    model = model.merge_and_unload()  # generation as the reference evaluates: merged fp16 model
    result["generation"] = reference_generation(model, processor, samples, cfg)
    return result  # the caller frees the GPU once these locals are gone


@torch.inference_mode()
def reference_generation(model, processor, samples, cfg: BenchConfig) -> dict:
    """Batch 1, sampling at T=0.2, fp16, eager attention: the reference's eval loop."""
    model.eval()
    model.generation_config.min_new_tokens = cfg.new_tokens

    def one(sample) -> None:
        image = Image.open(sample.image_paths[0]).convert("RGB")
        inputs = processor(text=[render_prompt(report_question())], images=[[image]], return_tensors="pt").to(
            "cuda"
        )
        inputs["pixel_values"] = inputs["pixel_values"].half()
        model.generate(
            **inputs, do_sample=True, temperature=0.2, max_new_tokens=cfg.new_tokens, pad_token_id=0
        )

    one(samples[0])
    with timed() as t:
        for sample in samples[: cfg.reference_gen_reports]:
            one(sample)
    return {"reports_per_s": cfg.reference_gen_reports / t["s"], "batch_size": 1}


def best(rows: list[dict], key: str) -> dict | None:
    rows = [r for r in rows if key in r]
    return max(rows, key=lambda r: r[key]) if rows else None


def curve_difference(reference: list[float], losses: list[float], steps: int) -> dict:
    """How far a loss curve is from a reference curve over their first `steps` optimizer steps (fewer if
    either is shorter): the max and mean over steps of |loss - reference| / reference."""
    relative = relative_differences(reference[:steps], losses[:steps])
    if not relative:
        raise ValueError("no optimizer steps to compare")
    return {"steps": len(relative), "max_rel_diff": max(relative), "mean_rel_diff": float(np.mean(relative))}


def compare_curves(rows: list[dict], steps: int) -> None:
    """Each row after the first gets `curve_vs_first`: its loss curve against the first row's (see
    curve_difference), or why they cannot be compared (an error, or other samples: another micro-batch)."""
    if not rows:
        return
    first = rows[0]
    for row in rows[1:]:
        if "losses" not in first or "losses" not in row:
            row["curve_vs_first"] = {
                "not_compared": "no loss curve (the configuration or the first one failed)"
            }
        elif row.get("config", {}).get("lora_modules") != first.get("config", {}).get("lora_modules"):
            row["curve_vs_first"] = {"not_compared": "another model: LoRA on other modules"}
        elif row.get("sample_order_sha256") != first.get("sample_order_sha256"):
            row["curve_vs_first"] = {
                "not_compared": f"other samples (micro-batch {row['micro_batch']} vs {first['micro_batch']})"
            }
        else:
            row["curve_vs_first"] = curve_difference(first["losses"], row["losses"], steps)


# The reference paper's experiment on IU X-Ray: 10 epochs over its training split, then its test split.
REFERENCE_EXPERIMENT = {"epochs": 10, "train_samples": 5029, "generations": 1251}


def projected_wall_time(train_row: dict, gen_row: dict, experiment: dict = REFERENCE_EXPERIMENT) -> dict:
    """Seconds the experiment would take at a training row's and a generation row's rates, their measured
    warm-ups included (the warm-ups' own samples and reports are part of the work). Rows of older results
    without a generation warm-up count none (`generation_warmup_measured`: False)."""
    samples = experiment["epochs"] * experiment["train_samples"]
    training_s = (
        train_row["warmup_s"]
        + max(samples - train_row.get("warmup_samples", 0), 0) / train_row["samples_per_s"]
    )
    gen_warmup_s = gen_row.get("warmup_s")
    reports = experiment["generations"] - (
        gen_row.get("warmup_reports", 0) if gen_warmup_s is not None else 0
    )
    generation_s = (gen_warmup_s or 0.0) + max(reports, 0) / gen_row["reports_per_s"]
    return {
        "training_s": training_s,
        "generation_s": generation_s,
        "total_s": training_s + generation_s,
        "training_warmup_s": train_row["warmup_s"],
        "generation_warmup_s": gen_warmup_s,
        "generation_warmup_measured": gen_warmup_s is not None,
    }


def experiment_projection(report: dict) -> dict | None:
    """The reference experiment's projected wall time at the fastest measured rate of train_lora.py's default
    recipe (`default_recipe`) and of the fastest LoRA configuration (`fastest`), with the fastest generation
    setting; None without a LoRA and a generation row."""
    lora = [r for r in report.get("lora", []) if "samples_per_s" in r and "config" in r]
    lora = [r for r in lora if not r["config"].get("lora_modules")]  # a measurement, not a recipe
    gen = best(report.get("generation", []), "reports_per_s")
    if not lora or gen is None:
        return None
    projection: dict = {
        "experiment": REFERENCE_EXPERIMENT,
        "generation": gen_label(gen).removeprefix("ours "),
    }
    defaults = [r for r in lora if TrainSpec(**r["config"]) == TrainSpec.default()]
    chosen = {"default_recipe": best(defaults, "samples_per_s"), "fastest": best(lora, "samples_per_s")}
    for key, row in chosen.items():
        if row is not None:
            projection[key] = {"training": row_label(row), "flags": train_flags(row, False)}
            projection[key] |= projected_wall_time(row, gen)
    return projection
